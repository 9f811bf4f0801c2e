"""Issue 8 point 9 through a real ``nclav serve``: odd file names, query values, path ids and
connection resets get a clear answer (or one log line), never a dropped connection or a 500.
No terraform is needed here."""

from __future__ import annotations

import gzip
import io
import os
import socket
import struct
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from cli_harness import clean_env, run_cli
from serve_harness import shared_server_fixture  # noqa: F401
from test_serve_input import assert_error

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from serve_harness import Server

ENCLAVE = "id: ne\nname: NE\ncloud: local\nregion: local\nnetwork: {}\n"
PARTITION = "id: p\nname: P\nbackend: terraform\n"


@pytest.fixture(scope="module")
def checked(shared_server: Server) -> Iterator[Server]:
    """The module's server; at the end, its log must show no unhandled error."""
    yield shared_server
    log = shared_server.stderr()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]


def _tree(root: Path, extra: bytes) -> Path:
    """A valid enclave with one partition, plus a partition file named ``extra`` (raw bytes)."""
    part = root / "ne" / "p"
    part.mkdir(parents=True)
    (root / "ne" / "config.yml").write_text(ENCLAVE)
    (part / "config.yml").write_text(PARTITION)
    (part / "main.tf").write_text("")
    with open(os.path.join(os.fsencode(part), extra), "wb") as f:
        f.write(b"# x\n")
    return root


def _tar_gz(members: dict[bytes, bytes]) -> bytes:
    """A gzip'd GNU tar whose member names are raw bytes (tarfile would insist on text)."""
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar,
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name.decode("latin-1"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- non-UTF-8 file names -------------------------------------------------------------------


def test_non_utf8_file_name_in_a_tree_is_422_naming_it(checked: Server, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", b"caf\xff.tf")
    for path in ("/reconcile/dry-run", "/reconcile"):
        error = assert_error(
            checked.request("POST", path, {"enclaves_dir": str(tree)}), 422, "validation_error"
        )
        assert "caf\\xff.tf" in error["message"], error
        assert "UTF-8" in error["message"], error


def test_non_utf8_member_of_a_bundle_is_422_naming_it(checked: Server) -> None:
    bundle = _tar_gz({b"ne/config.yml": ENCLAVE.encode(), b"ne/caf\xe9.tf": b""})
    error = assert_error(checked.request("POST", "/bundles", bundle), 422, "validation_error")
    assert "caf\\xe9.tf" in error["message"], error


# -- query parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/runs?limit=%C2%B2", "limit"),  # "²".isdigit() is True, int("²") fails
        ("/events?limit=%C2%B2", "limit"),
        ("/events?limit=%D9%A3", "limit"),  # Arabic-Indic three: int() would accept it
        ("/runs?limit=501", "limit"),
        ("/events?limit=99999999999999999999999", "limit"),
        ("/events?enclave_id=a%0A", "enclave_id"),
        ("/enclaves/e?wait=%C2%B2", "wait"),
        ("/enclaves/e?wait=1e3", "wait"),
        ("/enclaves/e?wait=inf", "wait"),
        ("/enclaves/e?wait=3601", "wait"),
    ],
)
def test_bad_query_values_are_400_naming_the_parameter(
    checked: Server, path: str, name: str
) -> None:
    method = "DELETE" if "wait=" in path else "GET"
    error = assert_error(checked.request(method, path), 400, "bad_request")
    assert error["message"].startswith(f"query parameter {name}:"), error
    assert error["details"][0]["field"] == name


def test_good_query_values_still_work(checked: Server) -> None:
    assert checked.ok("GET", "/runs?limit=500") == []
    assert checked.ok("GET", "/events?limit=0") == []
    assert checked.ok("GET", "/events?enclave_id=ne&limit=3") == []


# -- enclaves_dir paths the OS refuses ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/reconcile/dry-run", "/reconcile"])
@pytest.mark.parametrize("enclaves_dir", ["/tmp/a\x00b", "/proc"])
def test_unreadable_enclaves_dir_is_422(checked: Server, path: str, enclaves_dir: str) -> None:
    error = assert_error(
        checked.request("POST", path, {"enclaves_dir": enclaves_dir}), 422, "validation_error"
    )
    expected = "NUL" if "\x00" in enclaves_dir else "/proc/"
    assert expected in error["message"], error


# -- path ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/terraform/state/advnl%0A/p", "enc"),
        ("POST", "/terraform/state/advnl/p%0A", "part"),
        ("POST", "/terraform/state/a%20b/p", "enc"),
        ("GET", "/terraform/state/advnl%0A/p", "enc"),
        ("POST", "/terraform/state/advnl%0A/p/lock", "enc"),
        ("GET", "/enclaves/advnl%0A", "id"),
        ("DELETE", "/enclaves/advnl%0A", "id"),
        ("DELETE", "/enclaves/e/partitions/p%0A", "part"),
        ("GET", "/enclaves/e/partitions/p%0A/iac/runs", "part"),
        ("GET", "/enclaves/" + "a" * 64, "id"),
    ],
)
def test_path_ids_follow_the_yaml_id_rule(
    checked: Server, method: str, path: str, field: str
) -> None:
    body = b'{"version": 4}' if method == "POST" else None
    error = assert_error(checked.request(method, path, body), 422, "validation_error")
    assert error["details"][0]["field"] == field, error
    # Nothing was stored under the bad key.
    assert checked.request("GET", "/terraform/state/advnl/p").status == 204


# -- connection resets ------------------------------------------------------------------------


def test_a_connection_reset_is_one_warning_line(checked: Server) -> None:
    before = checked.stderr()
    resets = 5
    for _ in range(resets):
        sock = socket.create_connection((checked.host, checked.port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    time.sleep(0.5)
    new = checked.stderr()[len(before) :]
    dropped = [line for line in new.splitlines() if "dropped" in line]
    assert len(dropped) == resets, new
    assert all(" WARNING " in line for line in dropped), dropped
    assert "Traceback" not in new and " ERROR " not in new, new
    assert checked.get("/health", auth=False).status == 200


# -- Terraform state versions -----------------------------------------------------------------


def test_concurrent_state_posts_get_distinct_versions(checked: Server) -> None:
    """20 POSTs at once without a lock: 20 new versions, numbered apart; current is the last."""
    path = "/terraform/state/conc/p"
    assert checked.request("POST", path, b'{"serial": 0}').status == 200
    bodies = [b'{"serial": %d}' % n for n in range(1, 21)]
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda b: checked.request("POST", path, b).status, bodies))
    assert statuses == [200] * 20
    versions = sorted((checked.home / "blobs" / "tfstate" / "conc" / "p").iterdir())
    assert [v.name[:8] for v in versions] == [f"{n:08d}" for n in range(1, 22)]
    assert checked.get(path).body == versions[-1].read_bytes()


def test_validate_proc_is_a_path_error_exit_2() -> None:
    """The CLI side of ``enclaves_dir: /proc``: a path error and exit 2, not exit 1."""
    done = run_cli(["validate", "/proc"], clean_env(), timeout_s=120)
    assert done.returncode == 2, done
    assert "/proc/" in done.stderr and "PermissionError" not in done.stderr, done.stderr
