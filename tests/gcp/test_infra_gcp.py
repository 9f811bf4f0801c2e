"""infra/gcp against the code it deploys: fmt-clean; every setting functions_gcp reads is set,
and only names some code reads; the Cloud Tasks retry config outlasts the delivery policy;
tasks reach only the workers, as the tasks identity; no primitive roles, every grant named;
secrets without values; the Firestore indexes the store documents; every reference declared.

``terraform validate`` cannot run here: hashicorp/google is not in the offline provider mirror
(``test_validate_where_the_google_provider_is_mirrored`` skips and says so), so these checks
read the configuration (tests/infra_hcl.py).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from functions_gcp.settings import Settings
from infra_hcl import (
    ROOT,
    Root,
    evaluate,
    fmt_check,
    load,
    nclav_names_in_code,
    validate_offline,
    walk,
)
from nclav import notify
from nclav.docstore import layout as lay
from nclav.docstore.port import TABLE
from nclav.errors import TemporaryError
from nclav.gitsource.source import TOKEN_SECRET, WEBHOOK_SECRET
from nclav.runtime.delivery import DeliveryPolicy, GaveUp, Retry, decide
from nclav.runtime.drivers import env_name
from nclav.runtime.settings import env_var

INFRA = ROOT / "infra" / "gcp"


def driver_options() -> tuple[set[str], set[str]]:
    """(every NCLAV_GCP_* option, the required ones): the driver plugin's declaration, or
    where the driver is not in this tree yet, the seed README's --gcp-* table."""
    try:
        from functions_gcp.driver import OPTIONS
    except ImportError:
        return {f"NCLAV_GCP_{o}" for o in SEED_OPTIONS}, {
            "NCLAV_GCP_PARENT",
            "NCLAV_GCP_BILLING_ACCOUNT",
        }
    names = {env_name("gcp", o.name): o.required for o in OPTIONS}
    return set(names), {n for n, required in names.items() if required}


SEED_OPTIONS = ("PARENT", "BILLING_ACCOUNT", "PROJECT_PREFIX", "DEFAULT_REGION")
PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}


@pytest.fixture(scope="module")
def gcp() -> Root:
    return load("gcp")


def environments(gcp: Root) -> dict[str, dict[str, Any]]:
    """What each deployed entry point runs with: the three functions, the terraform service."""
    functions = gcp.locals["functions"]
    envs = {name: gcp.mapping(spec["env"]) for name, spec in functions.items()}
    run = gcp.resource("google_cloud_run_v2_service", "iac")
    container = run["template"][0]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    dynamic = container["dynamic"][0]["env"]
    envs["iac_worker"] = {**env, **gcp.mapping(dynamic["for_each"])}
    return envs


def console(gcp: Root, expression: str, local_names: list[str] | None = None, **values: str) -> Any:
    """``expression`` (text or ``${...}``) evaluated by terraform over this root's variables:
    the required ones get placeholders, ``values`` win."""
    required = {k: "x" for k, body in gcp.variables.items() if "default" not in body}
    inner = re.fullmatch(r"\$\{(.*)\}", expression, re.S)
    text = inner.group(1) if inner else expression
    return evaluate(gcp, local_names or [], text, {**required, "parent": "folders/1", **values})


def test_infra_gcp_is_terraform_fmt_clean() -> None:
    fmt_check(INFRA)


def test_validate_where_the_google_provider_is_mirrored() -> None:
    assert "Success" in validate_offline(INFRA, "google")


def test_every_reference_is_declared(gcp: Root) -> None:
    assert gcp.unresolved() == []


def test_every_entry_point_gets_every_setting_the_runtime_requires(gcp: Root) -> None:
    required = {
        env_var(f.name)
        for f in dataclasses.fields(Settings)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required >= {"NCLAV_PROJECT", "NCLAV_BUCKET", "NCLAV_STEPS_QUEUE", "NCLAV_IAC_QUEUE"}
    envs = environments(gcp)
    assert set(envs) == {"api", "worker", "schedule", "iac_worker"}
    required |= driver_options()[1]  # the driver's required options, on every entry point
    for name, env in envs.items():
        assert required <= set(env), (name, sorted(required - set(env)))
        assert env["NCLAV_CLOUD"] == "gcp"
        # Settings with a deployment-specific value: this root's names, not the defaults.
        assert env["NCLAV_DATABASE"] == "${google_firestore_database.state.name}", name
        assert env["NCLAV_TASKS_SERVICE_ACCOUNT"].startswith("${google_service_account.sa")
    # The git source's settings go to the functions that serve, fetch and poll it.
    for name in ("api", "worker", "schedule"):
        assert "NCLAV_GIT_URL" in envs[name]


def test_every_nclav_name_set_is_one_some_code_reads(gcp: Root) -> None:
    fields = {env_var(f.name) for f in dataclasses.fields(Settings)}
    read = nclav_names_in_code(ROOT / "core" / "nclav", ROOT / "functions_gcp")
    known = fields | read | driver_options()[0]
    for name, env in environments(gcp).items():
        unknown = {k for k in env if k.startswith("NCLAV_")} - known
        assert not unknown, (name, sorted(unknown))


def test_the_queues_retry_past_the_delivery_policys_give_up(gcp: Root) -> None:
    """Cloud Tasks makes max_attempts deliveries (X-CloudTasks-TaskRetryCount 0 .. n-1: the
    worker's attempt is that + 1); the policy, with the NCLAV_MAX_RECEIVES terraform computes
    from the same variable, records the step failed at an earlier attempt and retries every
    one before it. A max_attempts that would leave the policy no delivery is refused."""
    env = environments(gcp)["worker"]
    for max_attempts in {gcp.default("max_attempts"), 2, 25}:
        give_up = int(console(gcp, env["NCLAV_MAX_RECEIVES"], max_attempts=str(max_attempts)))
        policy = DeliveryPolicy(max_receives=give_up)
        assert 1 <= policy.max_receives < max_attempts  # before the queue's last attempt
        error = TemporaryError("the store is throttling")
        assert isinstance(decide(error, policy.max_receives, policy), GaveUp)
        for attempt in range(1, policy.max_receives):
            assert isinstance(decide(error, attempt, policy), Retry)
    with pytest.raises(ValueError, match="max_attempts must be at least 2"):
        console(gcp, "var.max_attempts", max_attempts="1")

    queues = gcp.of_type("google_cloud_tasks_queue")["q"]
    retry = queues["retry_config"][0]
    assert retry["max_attempts"] == "${var.max_attempts}"
    # Unlimited duration: the attempts alone bound a task, as they bound the policy.
    assert retry["max_retry_duration"] == "0s"
    # The queue's backoff is what the sweeper is told to allow for between deliveries.
    assert retry["min_backoff"] == "${var.redelivery_backoff_s}s"
    assert retry["max_backoff"] == "${var.redelivery_max_s}s"
    assert env["NCLAV_REDELIVERY_BACKOFF_S"] == "${tostring(var.redelivery_backoff_s)}"
    assert env["NCLAV_REDELIVERY_MAX_S"] == "${tostring(var.redelivery_max_s)}"
    assert set(gcp.locals["queue_targets"]) == {"steps", "iac"}


def test_tasks_reach_only_the_workers_and_only_as_the_tasks_identity(gcp: Root) -> None:
    queue = gcp.of_type("google_cloud_tasks_queue")["q"]
    target = queue["http_target"][0]
    override = target["uri_override"][0]
    assert override["uri_override_enforce_mode"] == "ALWAYS"
    assert override["scheme"] == "HTTPS"
    oidc = target["oidc_token"][0]
    assert oidc["service_account_email"] == '${google_service_account.sa["tasks"].email}'
    targets = gcp.locals["queue_targets"]
    assert targets["steps"]["uri"].startswith('${google_cloudfunctions2_function.fn["worker"]')
    assert targets["iac"]["uri"] == "${google_cloud_run_v2_service.iac.uri}"

    invokers = gcp.of_type("google_cloud_run_v2_service_iam_member")
    by_service: dict[str, set[str]] = {}
    for body in invokers.values():
        assert body["role"] == "roles/run.invoker"
        by_service.setdefault(body["name"], set()).add(body["member"])
    tasks = '${google_service_account.sa["tasks"].member}'
    worker = '${google_cloudfunctions2_function.fn["worker"].service_config[0].service}'
    assert by_service[worker] == {tasks}
    assert by_service["${google_cloud_run_v2_service.iac.name}"] == {tasks}
    schedule = '${google_cloudfunctions2_function.fn["schedule"].service_config[0].service}'
    assert by_service[schedule] == {'${google_service_account.sa["cron"].member}'}
    # Workers and the schedule function are internal; the API alone is public.
    functions = gcp.locals["functions"]
    assert functions["worker"]["ingress"] == functions["schedule"]["ingress"]
    assert functions["worker"]["ingress"] == "ALLOW_INTERNAL_ONLY"
    assert functions["api"]["ingress"] == "ALLOW_ALL"
    run = gcp.resource("google_cloud_run_v2_service", "iac")
    assert run["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    job = gcp.resource("google_cloud_scheduler_job", "sweep")["http_target"][0]
    assert (
        job["oidc_token"][0]["service_account_email"]
        == '${google_service_account.sa["cron"].email}'
    )


def test_request_limits_are_the_dispatch_deadlines(gcp: Root) -> None:
    env = environments(gcp)["iac_worker"]
    run = gcp.resource("google_cloud_run_v2_service", "iac")["template"][0]
    assert run["timeout"] == "${var.iac_timeout_s}s"
    assert env["NCLAV_IAC_DEADLINE_S"] == "${tostring(var.iac_timeout_s)}"
    assert run["max_instance_request_concurrency"] == 1
    assert gcp.default("iac_timeout_s") <= 1800  # Cloud Tasks' longest dispatch deadline
    assert console(gcp, "var.iac_timeout_s", iac_timeout_s="1800") == 1800
    with pytest.raises(ValueError, match="iac_timeout_s: between 300 and 1800"):
        console(gcp, "var.iac_timeout_s", iac_timeout_s="1801")
    worker = gcp.locals["functions"]["worker"]
    assert worker["timeout"] == "${var.worker_deadline_s}"
    assert env["NCLAV_WORKER_DEADLINE_S"] == "${tostring(var.worker_deadline_s)}"
    with pytest.raises(ValueError, match="worker_deadline_s: between 15 and 1800"):
        console(gcp, "var.worker_deadline_s", worker_deadline_s="1801")


def test_no_primitive_role_and_every_grant_names_its_resource(gcp: Root) -> None:
    roles = [v for k, v in walk(gcp.resources) if k == "role"]
    roles += gcp.default("worker_parent_roles") + gcp.default("iac_parent_roles")
    assert roles and not PRIMITIVE & set(roles), roles
    assert not [
        v
        for v in roles
        if isinstance(v, str) and v.startswith("roles/resourcemanager.projectIamAdmin")
    ]
    kinds = {kind for kind, _ in gcp.resources}
    # Additive members only: never a policy or binding that would replace others' grants.
    assert not [k for k in kinds if k.endswith(("_iam_policy", "_iam_binding"))]
    # Project-wide grants: only the build's log writer, and Firestore under a condition that
    # names the nclav database.
    for name, body in gcp.of_type("google_project_iam_member").items():
        if body["role"] == "roles/logging.logWriter":
            assert body["member"] == '${google_service_account.sa["build"].member}', name
            continue
        assert body["role"] == "roles/datastore.user", name
        expression = body["condition"][0]["expression"]
        assert expression == 'resource.name == "${google_firestore_database.state.id}"'
    # Token creator: the API on itself (signing upload URLs), nothing else in this project.
    creators = [
        b
        for b in gcp.of_type("google_service_account_iam_member").values()
        if b["role"] == "roles/iam.serviceAccountTokenCreator"
    ]
    assert creators == [
        {
            "service_account_id": '${google_service_account.sa["api"].name}',
            "role": "roles/iam.serviceAccountTokenCreator",
            "member": '${google_service_account.sa["api"].member}',
        }
    ]
    # The terraform worker impersonates partition accounts under the parent, nowhere else.
    assert "roles/iam.serviceAccountTokenCreator" in gcp.default("iac_parent_roles")
    assert "roles/iam.serviceAccountTokenCreator" not in gcp.default("worker_parent_roles")


def test_the_terraform_worker_may_grant_the_partition_roles_and_no_other(gcp: Root) -> None:
    """Partition steps (on the terraform worker) grant partition_roles on enclave projects:
    project IAM admin under the parent, conditioned on the roles a change may touch."""
    grant = gcp.locals["partition_grant"]
    assert grant["role"] == "roles/resourcemanager.projectIamAdmin"
    assert grant["expression"] == (
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])"
        ".hasOnly(${jsonencode(var.partition_roles)})"
    )
    for kind in ("google_folder_iam_member", "google_organization_iam_member"):
        body = gcp.of_type(kind)["partition_roles"]
        assert body["member"] == '${google_service_account.sa["iac"].member}'
        assert body["condition"][0]["expression"] == "${local.partition_grant.expression}"
        # Unconditional parent grants never include project IAM admin.
        assert "projectIamAdmin" not in str(gcp.of_type(kind)["parent"])
    env = environments(gcp)["iac_worker"]
    roles = '["roles/run.admin", "roles/pubsub.editor"]'
    rendered = console(
        gcp, "local.partition_grant.expression", ["partition_grant"], partition_roles=roles
    )
    assert rendered == (
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])"
        '.hasOnly(["roles/run.admin","roles/pubsub.editor"])'
    )
    joined = console(gcp, env["NCLAV_GCP_PARTITION_ROLES"], partition_roles=roles)
    assert joined == "roles/run.admin,roles/pubsub.editor"  # the driver's comma-separated form
    try:
        from functions_gcp.driver.config import DEFAULT_PARTITION_ROLES
    except ImportError:
        return  # the driver is not in this tree yet
    assert gcp.default("partition_roles") == list(DEFAULT_PARTITION_ROLES)


def test_secrets_exist_without_values_and_each_is_granted_by_name(gcp: Root) -> None:
    kinds = {kind for kind, _ in gcp.resources}
    assert "google_secret_manager_secret_version" not in kinds
    assert not [k for k, _ in walk(gcp.resources) if k in ("secret_data", "payload")]
    secrets = gcp.resource("google_secret_manager_secret", "s")
    names = set(re.findall(r'"([a-z-]+)"', secrets["for_each"]))
    assert names == {"api-token", TOKEN_SECRET, WEBHOOK_SECRET, notify.SECRET_NAME}
    env = environments(gcp)["api"]
    assert secrets["secret_id"] == env["NCLAV_SECRET_PREFIX"] + "${each.key}"
    assert env["NCLAV_TOKEN_SECRET"] == "api-token"
    # Who may read (accessor) and also add versions (version adder), as terraform expands it.
    names = ["secret_access", "secret_roles", "secret_grants"]
    grants = console(gcp, "local.secret_grants", names)
    granted = {(g["secret"], g["sa"], g["role"].rsplit(".", 1)[1]) for g in grants}
    read, write = ("secretAccessor",), ("secretAccessor", "secretVersionAdder")
    expected = {
        "api-token": {"api": write},  # only the API holds the API token
        WEBHOOK_SECRET: {"api": write, "worker": write, "schedule": write},
        TOKEN_SECRET: {"api": write, "worker": read, "schedule": read},
        notify.SECRET_NAME: dict.fromkeys(("api", "worker", "iac", "schedule"), write),
    }
    assert granted == {
        (secret, sa, role)
        for secret, by_sa in expected.items()
        for sa, roles in by_sa.items()
        for role in roles
    }
    assert len({g["key"] for g in grants}) == len(grants)  # for_each keys are unique
    grant = gcp.resource("google_secret_manager_secret_iam_member", "secrets")
    assert grant["secret_id"] == "${google_secret_manager_secret.s[each.value.secret].id}"


def test_firestore_indexes_are_the_ones_the_store_documents(gcp: Root) -> None:
    readme = (ROOT / "functions_gcp" / "README.md").read_text()
    composite = set(re.findall(r"`(\w+)\((\w+) ==, (\w+) (asc|desc)\)`", readme))
    assert composite, "functions_gcp/README.md lists no composite index"
    declared = {
        (i["collection"], i["filter"], i["order"], i["direction"].removesuffix("ENDING").lower())
        for i in gcp.locals["composite_indexes"].values()
    }
    assert declared == composite
    index = gcp.resource("google_firestore_index", "listing")
    assert [f["order"] for f in index["fields"]] == ["ASCENDING", "${each.value.direction}"]
    # Every index of the documents port (core's layout) is declared, each way it is read.
    indexes = (TABLE, lay.GSI1, lay.GSI2, lay.LEASE_INDEX, lay.READY_INDEX)
    assert {(i.pk, i.sk) for i in indexes} == {(f, o) for _, f, o, _ in composite}
    assert "`doc`/`docz` exempt" in readme
    assert gcp.resource("google_firestore_field", "unindexed")["index_config"] == [{}]
    database = gcp.resource("google_firestore_database", "state")
    assert database["type"] == "FIRESTORE_NATIVE"


def test_functions_are_the_framework_targets_of_the_entry_module(gcp: Root) -> None:
    functions = gcp.resource("google_cloudfunctions2_function", "fn")
    build = functions["build_config"][0]
    assert build["entry_point"] == "${each.key}"
    module = ROOT / gcp.default("function_source")
    targets = set(gcp.locals["functions"]) | {"iac_worker"}
    assert targets == {"api", "worker", "schedule", "iac_worker"}
    if not module.exists():
        pytest.skip(f"{module.relative_to(ROOT)} is not in this tree yet (the GCP entry points)")
    defined = set(re.findall(r"(?m)^def (\w+)\(", module.read_text()))
    assert targets <= defined, sorted(targets - defined)


def test_every_derived_name_fits_at_the_lengths_name_allows(gcp: Root) -> None:
    """The names built from var.name, at its shortest and longest: GCP refuses an account id
    outside 6-30 characters, a database id under 4, a bucket name over 63."""
    condition = gcp.variables["name"]["validation"][0]["condition"]
    pattern = re.fullmatch(r'\$\{can\(regex\("(.+)", var\.name\)\)\}', condition)
    assert pattern, condition
    regex = pattern.group(1).replace("\\\\", "\\")
    shortest = next(n for n in ("ab", "abc", "abcd") if re.fullmatch(regex, n))
    longest = max(
        (("a" + "b" * k) for k in range(1, 40) if re.fullmatch(regex, "a" + "b" * k)), key=len
    )
    accounts = gcp.resource("google_service_account", "sa")
    roles = re.findall(r'"(\w+)"', accounts["for_each"])
    project = "p" * 30  # the longest project id
    for name in (shortest, longest):
        for role in roles:
            account = (
                accounts["account_id"].replace("${var.name}", name).replace("${each.key}", role)
            )
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account), account
        database = gcp.resource("google_firestore_database", "state")["name"].replace(
            "${var.name}", name
        )
        assert 4 <= len(database) <= 63, database
        for bucket in ("blobs", "source"):
            full = gcp.resource("google_storage_bucket", bucket)["name"]
            full = full.replace("${var.project}", project).replace("${var.name}", name)
            assert 3 <= len(full) <= 63, full
        # The terraform worker's deterministic URL label: service name, dash, project number.
        assert len(f"{name}-iac-{'9' * 12}") <= 63
