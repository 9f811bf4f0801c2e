"""The plan: changes and steps from (desired graph, applied state), and their renderings."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from nclav.hashing import inputs_hash
from nclav.plan import Action, ChangeKind, Plan, plan_changes
from nclav.state import EnclaveState, Status
from nclav.transitions import simulate_apply
from support import EXAMPLES, SEED, load_graph, write_tree

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

DEV = "product-a-dev"


def assert_topological(plan: Plan) -> None:
    """Every step comes after every step it depends on, and dependencies exist."""
    seen: set[str] = set()
    for step in plan.steps:
        assert set(step.depends_on) <= seen, f"{step.id} runs before {step.depends_on}"
        assert step.id not in seen
        seen.add(step.id)


def lines(plan: Plan) -> list[str]:
    return plan.render_text().splitlines()


def step(plan: Plan, action: Action, enclave_id: str, target: str | None = None):  # noqa: ANN201
    sid = f"{action.value}:{enclave_id}" + (f"/{target}" if target else "")
    (found,) = (s for s in plan.steps if s.id == sid)
    return found


def position(plan: Plan, sid: str) -> int:
    return [s.id for s in plan.steps].index(sid)


def with_partition(
    applied: Mapping[str, EnclaveState], eid: str, pid: str, **update: object
) -> dict[str, EnclaveState]:
    enclave = applied[eid]
    part = enclave.partitions[pid].model_copy(update=update)
    return {
        **applied,
        eid: enclave.model_copy(update={"partitions": {**enclave.partitions, pid: part}}),
    }


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "seed", SEED)


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "product-a" / "enclaves", root)
    return root


def applied_from(root: Path) -> dict[str, EnclaveState]:
    return simulate_apply(load_graph(root), {})


# -- first apply --------------------------------------------------------------------------


def test_first_apply_of_the_examples(examples: Path) -> None:
    plan = plan_changes(load_graph(examples), {})
    assert plan.render_text() == (
        "+ enclave product-a-dev\n"
        "  + partition product-a-dev/db\n"
        "  + partition product-a-dev/api\n"
        "  > export product-a-dev/api-http\n"
        "  > export product-a-dev/db-tcp\n"
        "+ enclave web-dev\n"
        "  + partition web-dev/frontend\n"
        "  < import product-a-dev/database\n"
        "  < import web-dev/product_api\n"
        "9 change(s) would be applied."
    )
    assert_topological(plan)
    frontend = step(plan, Action.PROVISION_PARTITION, "web-dev", "frontend")
    assert "provision_partition:product-a-dev/api" in frontend.depends_on
    assert "wire_import:web-dev/product_api" in frontend.depends_on
    wire = step(plan, Action.WIRE_IMPORT, "web-dev", "product_api")
    assert "wire_export:product-a-dev/api-http" in wire.depends_on


README_DIFF = [  # behaviour-spec 3.4 / the seed README
    "+ enclave product-a-dev",
    "  + partition product-a-dev/api",
    "  + partition product-a-dev/db",
    "  > export product-a-dev/api-http",
    "  > export product-a-dev/db-tcp",
    "  < import product-a-dev/database",
]


def test_first_apply_of_the_seed_fixture(seed: Path) -> None:
    plan = plan_changes(load_graph(seed), {})
    assert lines(plan)[-1] == "6 change(s) would be applied."
    assert sorted(lines(plan)[:-1]) == sorted(README_DIFF)
    # the partitions come in dependency order: db before api, which reads db's outputs
    assert lines(plan)[1:3] == ["  + partition product-a-dev/db", "  + partition product-a-dev/api"]
    assert [c.kind for c in plan.changes] == [
        ChangeKind.ENCLAVE_CREATED,
        ChangeKind.PARTITION_CREATED,
        ChangeKind.PARTITION_CREATED,
        ChangeKind.EXPORT_WIRED,
        ChangeKind.EXPORT_WIRED,
        ChangeKind.IMPORT_WIRED,
    ]
    assert not any(c.conditional or c.reason for c in plan.changes)


def test_first_apply_steps_of_the_seed_fixture(seed: Path) -> None:
    plan = plan_changes(load_graph(seed), {})
    assert_topological(plan)
    assert {s.id for s in plan.steps} == {
        "provision_enclave:product-a-dev",
        "provision_partition:product-a-dev/db",
        "provision_partition:product-a-dev/api",
        "wire_export:product-a-dev/api-http",
        "wire_export:product-a-dev/db-tcp",
        "wire_import:product-a-dev/database",
    }
    assert plan.steps[0].id == "provision_enclave:product-a-dev"
    api = step(plan, Action.PROVISION_PARTITION, DEV, "api")
    assert set(api.depends_on) == {
        "provision_enclave:product-a-dev",
        "provision_partition:product-a-dev/db",
        "wire_import:product-a-dev/database",
    }
    assert step(plan, Action.WIRE_EXPORT, DEV, "db-tcp").depends_on == (
        "provision_enclave:product-a-dev",
        "provision_partition:product-a-dev/db",
    )
    assert (
        "wire_export:product-a-dev/db-tcp"
        in step(plan, Action.WIRE_IMPORT, DEV, "database").depends_on
    )
    assert not any(s.conditional for s in plan.steps)


# -- nothing to do --------------------------------------------------------------------------


@pytest.mark.parametrize("tree", ["seed", "examples"])
def test_plan_after_apply_is_empty(tree: str, request: pytest.FixtureRequest) -> None:
    graph = load_graph(request.getfixturevalue(tree))
    plan = plan_changes(graph, simulate_apply(graph, {}))
    assert plan.render_text() == "No changes detected."
    assert (plan.changes, plan.steps) == ((), ())
    assert plan.to_json() == {"changes": [], "steps": []}


def test_simulated_apply_resolves_inputs_from_upstream_outputs(seed: Path) -> None:
    graph = load_graph(seed)
    outputs = {"hostname": "db.internal", "port": "5432"}
    state = simulate_apply(graph, {}, outputs=lambda e, p, k: outputs[k] if p == "db" else k)
    api = state[DEV].partitions["api"]
    assert api.inputs_hash == inputs_hash({"db_host": "db.internal", "db_port": "5432"})
    assert state[DEV].partitions["db"].resolved_outputs == outputs
    assert api.meta.status == Status.ACTIVE
    assert set(state[DEV].import_handles) == {"database"}
    assert set(state[DEV].export_handles) == {"api-http", "db-tcp"}


# -- updates ----------------------------------------------------------------------------------


def test_editing_main_tf_updates_the_partition_and_maybe_its_importers(seed: Path) -> None:
    applied = applied_from(seed)
    (seed / "product-a/dev/db/main.tf").write_text('variable "engine" {}\n# tuned\n')
    plan = plan_changes(load_graph(seed), applied)
    assert lines(plan) == [
        "  ~ partition product-a-dev/db  (config or files changed)",
        "  ~ partition product-a-dev/api  (if outputs of product-a-dev/db change)",
        "  > export product-a-dev/api-http  (if outputs of product-a-dev/api change)",
        "  > export product-a-dev/db-tcp  (if outputs of product-a-dev/db change)",
        "  < import product-a-dev/database  (if export product-a-dev/db-tcp changes)",
        "5 change(s) would be applied (4 only if upstream outputs change).",
    ]
    assert [c.conditional for c in plan.changes] == [False, True, True, True, True]
    assert_topological(plan)
    assert not step(plan, Action.PROVISION_PARTITION, DEV, "db").conditional
    api = step(plan, Action.PROVISION_PARTITION, DEV, "api")
    assert api.conditional
    assert "provision_partition:product-a-dev/db" in api.depends_on
    assert step(plan, Action.WIRE_EXPORT, DEV, "db-tcp").conditional
    assert not any(s.action == Action.PROVISION_ENCLAVE for s in plan.steps)


def test_exporter_change_reaches_importers_in_other_enclaves(examples: Path) -> None:
    applied = applied_from(examples)
    (examples / "product-a/dev/api/main.tf").write_text("# changed\n")
    plan = plan_changes(load_graph(examples), applied)
    assert "  ~ partition product-a-dev/api  (config or files changed)" in lines(plan)
    assert "  ~ partition web-dev/frontend  (if outputs of product-a-dev/api change)" in lines(plan)
    assert "  < import web-dev/product_api  (if export product-a-dev/api-http changes)" in lines(
        plan
    )
    assert "  ~ partition product-a-dev/db" not in plan.render_text()
    assert_topological(plan)
    frontend = step(plan, Action.PROVISION_PARTITION, "web-dev", "frontend")
    assert "provision_partition:product-a-dev/api" in frontend.depends_on


def test_changed_enclave_setting(seed: Path) -> None:
    applied = applied_from(seed)
    config = seed / "product-a/dev/config.yml"
    config.write_text(config.read_text().replace("region: local-1", "region: local-2"))
    plan = plan_changes(load_graph(seed), applied)
    assert lines(plan) == [
        "~ enclave product-a-dev  (settings changed)",
        "1 change(s) would be applied.",
    ]
    assert [s.id for s in plan.steps] == ["provision_enclave:product-a-dev"]


def test_enclave_change_maybe_updates_partitions_reading_driver_context(seed: Path) -> None:
    db = seed / "product-a/dev/db/config.yml"
    db.write_text(db.read_text().replace("engine: postgres", 'engine: "pg-{{ nclav_region }}"'))
    applied = applied_from(seed)
    config = seed / "product-a/dev/config.yml"
    config.write_text(config.read_text().replace("region: local-1", "region: local-2"))
    plan = plan_changes(load_graph(seed), applied)
    assert lines(plan)[:2] == [
        "~ enclave product-a-dev  (settings changed)",
        "  ~ partition product-a-dev/db  (if the context of enclave product-a-dev changes)",
    ]
    db_step = step(plan, Action.PROVISION_PARTITION, DEV, "db")
    assert db_step.conditional and db_step.depends_on == ("provision_enclave:product-a-dev",)
    assert_topological(plan)


@pytest.mark.parametrize(
    "status", [s for s in Status if s not in (Status.ACTIVE,)], ids=lambda s: s.value
)
def test_partition_whose_last_attempt_failed_is_retried(seed: Path, status: Status) -> None:
    applied = applied_from(seed)
    meta = applied[DEV].partitions["db"].meta
    meta = meta.failed("boom") if status == Status.ERROR else meta.started(status)
    plan = plan_changes(load_graph(seed), with_partition(applied, DEV, "db", meta=meta))
    assert lines(plan)[0] == f"  ~ partition product-a-dev/db  (last attempt ended {status.value})"
    assert not step(plan, Action.PROVISION_PARTITION, DEV, "db").conditional
    assert_topological(plan)


def test_enclave_whose_last_attempt_failed_is_retried(seed: Path) -> None:
    applied = applied_from(seed)
    enclave = applied[DEV]
    failed = {DEV: enclave.model_copy(update={"meta": enclave.meta.failed("quota exceeded")})}
    plan = plan_changes(load_graph(seed), failed)
    assert lines(plan) == [
        "~ enclave product-a-dev  (last attempt ended error)",
        "1 change(s) would be applied.",
    ]


def test_upstream_outputs_changed_in_applied_state(seed: Path) -> None:
    applied = applied_from(seed)
    db = applied[DEV].partitions["db"]
    moved = with_partition(
        applied, DEV, "db", resolved_outputs={**db.resolved_outputs, "hostname": "moved.internal"}
    )
    plan = plan_changes(load_graph(seed), moved)
    api = next(c for c in plan.changes if c.target == "api")
    assert (api.kind, api.reason, api.conditional) == (
        ChangeKind.PARTITION_UPDATED,
        "upstream outputs changed",
        False,
    )
    assert "  ~ partition product-a-dev/api  (upstream outputs changed)" in lines(plan)
    assert "  > export product-a-dev/db-tcp  (settings changed)" in lines(plan)
    assert not any(c.target == "db" and c.kind.startswith("Partition") for c in plan.changes)
    assert not step(plan, Action.PROVISION_PARTITION, DEV, "api").conditional
    assert_topological(plan)


# -- removals ---------------------------------------------------------------------------------


def test_removed_partition_is_torn_down_before_the_enclave_provisions(seed: Path) -> None:
    write_tree(
        seed,
        {
            "product-a/dev/cache/config.yml": "id: cache\nname: Cache\n",
            "product-a/dev/cache/main.tf": "",
        },
    )
    applied = applied_from(seed)
    shutil.rmtree(seed / "product-a/dev/cache")
    (seed / "product-a/dev/db/main.tf").write_text("# changed\n")
    plan = plan_changes(load_graph(seed), applied)
    assert plan.changes[0].kind == ChangeKind.PARTITION_DELETED
    assert lines(plan)[0] == "  - partition product-a-dev/cache"
    assert plan.steps[0].id == "teardown_partition:product-a-dev/cache"
    provisions = [s for s in plan.steps if s.action == Action.PROVISION_PARTITION]
    assert {s.target for s in provisions} == {"db", "api"}
    assert all("teardown_partition:product-a-dev/cache" in s.depends_on for s in provisions)
    assert_topological(plan)


def test_removed_partition_alone(seed: Path) -> None:
    write_tree(
        seed,
        {
            "product-a/dev/cache/config.yml": "id: cache\nname: Cache\n",
            "product-a/dev/cache/main.tf": "",
        },
    )
    applied = applied_from(seed)
    shutil.rmtree(seed / "product-a/dev/cache")
    plan = plan_changes(load_graph(seed), applied)
    assert lines(plan) == ["  - partition product-a-dev/cache", "1 change(s) would be applied."]
    assert [(s.id, s.depends_on) for s in plan.steps] == [
        ("teardown_partition:product-a-dev/cache", ())
    ]
    assert plan.changes[0].to_json() == {
        "kind": "PartitionDeleted",
        "enclave_id": DEV,
        "partition_id": "cache",
    }


def test_removed_enclaves_are_torn_down_importers_first(examples: Path, tmp_path: Path) -> None:
    applied = applied_from(examples)
    plan = plan_changes(load_graph(write_tree(tmp_path / "empty", {})), applied)
    assert lines(plan) == [
        "- enclave web-dev",
        "  - partition web-dev/frontend",
        "- enclave product-a-dev",
        "  - partition product-a-dev/api",
        "  - partition product-a-dev/db",
        "5 change(s) would be applied.",
    ]
    assert_topological(plan)
    ids = [s.id for s in plan.steps]
    assert ids.index("teardown_enclave:web-dev") < ids.index("teardown_partition:product-a-dev/api")
    assert ids[-1] == "teardown_enclave:product-a-dev"
    for target in ("api", "db"):
        teardown = step(plan, Action.TEARDOWN_PARTITION, DEV, target)
        assert "teardown_enclave:web-dev" in teardown.depends_on
    # within an enclave, a partition is torn down before the partition whose outputs it read
    db = step(plan, Action.TEARDOWN_PARTITION, DEV, "db")
    assert "teardown_partition:product-a-dev/api" in db.depends_on
    web = step(plan, Action.TEARDOWN_ENCLAVE, "web-dev")
    assert set(web.depends_on) == {
        "teardown_partition:web-dev/frontend",
        "unwire_import:web-dev/product_api",
    }
    unwire = step(plan, Action.UNWIRE_EXPORT, DEV, "api-http")
    assert "teardown_partition:product-a-dev/api" in unwire.depends_on
    assert {c.to_json()["kind"] for c in plan.changes} == {"EnclaveDeleted", "PartitionDeleted"}
    assert plan.changes[0].to_json() == {"kind": "EnclaveDeleted", "id": "web-dev"}


def test_removing_only_the_importer_enclave(examples: Path) -> None:
    applied = applied_from(examples)
    shutil.rmtree(examples / "web")
    plan = plan_changes(load_graph(examples), applied)
    assert lines(plan) == [
        "- enclave web-dev",
        "  - partition web-dev/frontend",
        "2 change(s) would be applied.",
    ]
    assert [s.id for s in plan.steps] == [
        "teardown_partition:web-dev/frontend",
        "unwire_import:web-dev/product_api",
        "teardown_enclave:web-dev",
    ]
    assert_topological(plan)
    after = simulate_apply(load_graph(examples), applied, plan=plan)
    assert set(after) == {DEV}


def drop_web_import(examples: Path) -> None:
    config = examples / "web/dev/config.yml"
    config.write_text(config.read_text().split("imports:")[0])
    write_tree(
        examples,
        {
            "web/dev/frontend/config.yml": "id: frontend\nname: F\nproduces: http\n"
            "declared_outputs: [hostname, port]\n"
        },
    )


def test_removed_import_is_unwired(examples: Path) -> None:
    applied = applied_from(examples)
    drop_web_import(examples)
    plan = plan_changes(load_graph(examples), applied)
    assert lines(plan) == [
        "~ enclave web-dev  (settings changed)",
        "  ~ partition web-dev/frontend  (config or files changed)",
        "  - import web-dev/product_api",
        "3 change(s) would be applied.",
    ]
    assert plan.changes[-1].to_json() == {
        "kind": "ImportUnwired",
        "importer_enclave": "web-dev",
        "alias": "product_api",
    }
    assert step(plan, Action.UNWIRE_IMPORT, "web-dev", "product_api")
    assert_topological(plan)
    graph = load_graph(examples)
    after = simulate_apply(graph, applied, plan=plan)
    assert "product_api" not in after["web-dev"].import_handles
    assert plan_changes(graph, after).changes == ()


def test_removed_export_is_unwired_after_its_importers(examples: Path) -> None:
    applied = applied_from(examples)
    drop_web_import(examples)
    config = examples / "product-a/dev/config.yml"
    text = config.read_text()
    start = text.index("  - name: api-http")
    config.write_text(text[:start] + text[text.index("  - name: db-tcp") :])
    plan = plan_changes(load_graph(examples), applied)
    assert "  - export product-a-dev/api-http" in lines(plan)
    unwired = next(c for c in plan.changes if c.kind == ChangeKind.EXPORT_UNWIRED)
    assert unwired.to_json() == {
        "kind": "ExportUnwired",
        "enclave_id": DEV,
        "export_name": "api-http",
    }
    unwire = step(plan, Action.UNWIRE_EXPORT, DEV, "api-http")
    assert "unwire_import:web-dev/product_api" in unwire.depends_on
    assert_topological(plan)


# -- renderings -------------------------------------------------------------------------------


def test_change_json_shapes(examples: Path) -> None:
    plan = plan_changes(load_graph(examples), {})
    shapes = {}
    for change in plan.to_json()["changes"]:  # type: ignore[union-attr]
        shapes.setdefault(change["kind"], change)
    assert shapes == {
        "EnclaveCreated": {"kind": "EnclaveCreated", "id": DEV},
        "PartitionCreated": {"kind": "PartitionCreated", "enclave_id": DEV, "partition_id": "db"},
        "ExportWired": {"kind": "ExportWired", "enclave_id": DEV, "export_name": "api-http"},
        "ImportWired": {"kind": "ImportWired", "importer_enclave": DEV, "alias": "database"},
    }


def test_conditional_change_json_carries_reason_and_flag(seed: Path) -> None:
    applied = applied_from(seed)
    (seed / "product-a/dev/db/main.tf").write_text("# changed\n")
    changes = plan_changes(load_graph(seed), applied).to_json()["changes"]
    assert changes[:2] == [  # type: ignore[index]
        {
            "kind": "PartitionUpdated",
            "enclave_id": DEV,
            "partition_id": "db",
            "reason": "config or files changed",
        },
        {
            "kind": "PartitionUpdated",
            "enclave_id": DEV,
            "partition_id": "api",
            "reason": "if outputs of product-a-dev/db change",
            "conditional": True,
        },
    ]


def test_step_json_shape(seed: Path) -> None:
    plan = plan_changes(load_graph(seed), {})
    steps = plan.to_json()["steps"]
    assert steps[1] == {  # type: ignore[index]
        "id": "provision_partition:product-a-dev/db",
        "action": "provision_partition",
        "enclave_id": DEV,
        "target": "db",
        "depends_on": ["provision_enclave:product-a-dev"],
        "conditional": False,
    }
    assert steps[0]["target"] is None  # type: ignore[index]
