"""The GCP driver's plugin: its ``--gcp-*`` options declared once, found through the entry
point pyproject.toml declares, and ``nclav serve --cloud gcp`` built from them; its naming
rules; and what importing it costs (no Google client library, no gRPC)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from functions_gcp.driver import PLUGIN, GcpDriver, config_from_options
from functions_gcp.driver.config import (
    GcpDriverConfig,
    display_name,
    label_value,
    partition_account_id,
    project_id,
    resource_name,
)
from nclav.errors import PermanentError, SpecError
from nclav.runtime.drivers import options_from_env

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {"parent": "folders/123", "billing_account": "012345-6789AB-CDEF01"}


def test_the_plugin_declares_the_seed_readme_options_once() -> None:
    names = [o.name for o in PLUGIN.options]
    assert names[:4] == ["parent", "billing_account", "project_prefix", "default_region"]
    driver = PLUGIN.make_driver({**OPTIONS, "project_prefix": "acme"})
    assert isinstance(driver, GcpDriver)
    assert driver.config.billing_account == "billingAccounts/012345-6789AB-CDEF01"
    assert driver.config.default_region == "us-central1"
    assert driver.config.partition_roles == ("roles/editor",)
    with pytest.raises(SpecError, match="--gcp-parent.*NCLAV_GCP_PARENT"):
        PLUGIN.make_driver({"billing_account": "012345-6789AB-CDEF01"})


def test_bad_option_values_are_named_by_flag() -> None:
    with pytest.raises(SpecError) as caught:
        GcpDriverConfig(parent="folder/1", billing_account="nope", project_prefix="Acme")
    text = str(caught.value)
    for flag in ("--gcp-parent", "--gcp-billing-account", "--gcp-project-prefix"):
        assert flag in text
    with pytest.raises(SpecError, match="--gcp-partition-roles"):
        GcpDriverConfig(
            parent="folders/1", billing_account=OPTIONS["billing_account"], partition_roles=("x",)
        )


def test_env_options_reach_the_config() -> None:
    env = {
        "NCLAV_GCP_PARENT": "organizations/9",
        "NCLAV_GCP_BILLING_ACCOUNT": "billingAccounts/abcdef-012345-6789ab",
        "NCLAV_GCP_PARTITION_ROLES": "roles/viewer, roles/storage.admin",
    }
    config = config_from_options(options_from_env(PLUGIN, env))
    assert config.parent == "organizations/9"
    assert config.billing_account == "billingAccounts/ABCDEF-012345-6789AB"
    assert config.partition_roles == ("roles/viewer", "roles/storage.admin")


# -- naming ---------------------------------------------------------------------------------------


def config(prefix: str | None = "acme") -> GcpDriverConfig:
    return GcpDriverConfig(
        parent="folders/1", billing_account=OPTIONS["billing_account"], project_prefix=prefix
    )


def test_project_ids() -> None:
    assert project_id(config(), "product-a-dev") == "acme-product-a-dev"
    # a lossy change (case, dots) or a cut gets a hash: two ids never share a project
    assert project_id(config(), "a.b") != project_id(config(), "a_b")
    long = project_id(config(), "x" * 40)
    assert len(long) == 30 and long.startswith("acme-xxxx")
    with pytest.raises(PermanentError, match="6-30 lowercase"):
        project_id(config(None), "dev")  # too short without a prefix
    with pytest.raises(PermanentError, match="starting with a letter"):
        project_id(config(None), "1-enclave")


def test_account_resource_and_label_names() -> None:
    assert partition_account_id("db") == "partition-db"
    long = partition_account_id("a-very-long-partition-name")
    assert len(long) <= 30 and long.startswith("partition-a-very")
    assert partition_account_id("Web_1") != partition_account_id("web-1")
    assert resource_name("nclav-ep-", "pg") == "nclav-ep-pg"
    assert resource_name("nclav-ep-", "My_Alias").startswith("nclav-ep-my-alias-")
    assert label_value("Prod.EU") == "prod_eu"
    assert display_name("dev (team: a/b)", "acme-dev") == "dev team a b"
    assert display_name("@@", "acme-dev") == "acme-dev"


# -- registration and serve -----------------------------------------------------------------------


def entry_point_dir(tmp_path: Path) -> Path:
    """Package metadata declaring the entry points pyproject.toml declares (as an install of
    this tree would), so the core finds the plugin the way it finds it in production."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["nclav.drivers"]
    assert declared["gcp"] == "functions_gcp.driver:PLUGIN"
    dist = tmp_path / "site" / "nclav_gcp_plugin-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nclav-gcp-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[nclav.drivers]\ngcp = {declared['gcp']}\n")
    return dist.parent


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    site = entry_point_dir(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "core"), str(ROOT)])
    env.update(extra)
    return env


def nclav(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nclav", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_builds_the_gcp_flags_from_the_plugin(tmp_path: Path) -> None:
    env = serve_env(tmp_path)
    shown = nclav(env, "serve", "--help")
    assert shown.returncode == 0, shown.stderr
    for flag in ("--gcp-parent", "--gcp-billing-account", "--gcp-project-prefix"):
        assert flag in shown.stdout
    home = str(tmp_path / "home")
    missing = nclav(env, "serve", "--cloud", "gcp", "--ephemeral", "--port", "0", "--home", home)
    assert missing.returncode == 2
    assert "--gcp-parent" in missing.stderr and "NCLAV_GCP_BILLING_ACCOUNT" in missing.stderr


def test_serve_cloud_gcp_starts_with_its_options(tmp_path: Path) -> None:
    env = serve_env(tmp_path, NCLAV_GCP_BILLING_ACCOUNT=OPTIONS["billing_account"])
    err = tmp_path / "serve.err"
    args = ["serve", "--cloud", "gcp", "--gcp-parent", "folders/123", "--ephemeral"]
    args += ["--port", "0", "--home", str(tmp_path / "home")]
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nclav", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "nclav listening on" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        url = err.read_text().split("nclav listening on ", 1)[1].split()[0]
        with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:  # noqa: S310
            assert answer.status == 200 and json.loads(answer.read())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_importing_the_gcp_modules_loads_no_client_library() -> None:
    code = (
        "import sys, time; t = time.perf_counter();"
        "import functions_gcp.driver, functions_gcp.secrets;"
        "t = time.perf_counter() - t;"
        "bad = sorted(m for m in sys.modules if m.startswith(('googleapiclient', 'grpc',"
        " 'google.cloud.', 'google.api_core', 'requests', 'google.auth.transport')));"
        "print(bad, round(t * 1000))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("[] "), out  # requests and google-auth come with the first call


def test_the_gcp_extra_holds_what_the_driver_and_secret_store_import() -> None:
    import ast
    import importlib.metadata
    import re

    files = [*(ROOT / "functions_gcp" / "driver").glob("*.py")]
    files += [ROOT / "functions_gcp" / "secrets.py", ROOT / "functions_gcp" / "_rest.py"]
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
    third_party = {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names}
    third_party = {m for m in third_party if m.split(".")[0] not in ("nclav", "functions_gcp")}
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["gcp"]
    pinned = {re.split(r"[=<>~ ]", r)[0].lower() for r in extra}
    owners = importlib.metadata.packages_distributions()
    needed = set()
    for module in third_party:
        top = module.split(".")[0]
        dists = {d.lower() for d in owners.get(top, [])}
        if top == "google":  # a namespace: the distribution that has the submodule
            dists = {"google-auth"} if module.startswith("google.auth") else dists
        needed |= dists
    assert needed == {"google-auth", "requests"}, third_party
    assert needed <= pinned
