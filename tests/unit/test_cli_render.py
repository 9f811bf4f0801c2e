"""What the thin client prints, rendered from the API's JSON without a server."""

from __future__ import annotations

import pytest

from nclav.cli.render import (
    change_line,
    deletions,
    diff_summary,
    error_lines,
    graph_dot,
    graph_text,
    iac_log_header,
    iac_runs_table,
    orphan_rows,
    run_detail,
    run_summary,
    status_lines,
    step_label,
    table,
)
from nclav.plan import Change, ChangeKind

TARGETS = {"Enclave": None, "Partition": "db", "Export": "api-http", "Import": "database"}


@pytest.mark.parametrize("kind", list(ChangeKind))
@pytest.mark.parametrize("reason", ["", "config or files changed"])
def test_change_lines_are_the_cores_lines(kind: ChangeKind, reason: str) -> None:
    target = next(t for prefix, t in TARGETS.items() if kind.value.startswith(prefix))
    change = Change(kind, "product-a-dev", target, reason, conditional=bool(reason))
    assert change_line(change.to_json()) == change.render()


def test_unknown_change_kinds_are_shown_not_hidden() -> None:
    assert change_line({"kind": "EnclaveMoved", "id": "e"}) == (
        '  ? {"id": "e", "kind": "EnclaveMoved"}'
    )


def test_diff_summary() -> None:
    assert diff_summary([]) == "No changes detected."
    assert diff_summary([{"kind": "EnclaveCreated", "id": "e"}]) == "1 change(s) would be applied."
    maybe = [{"kind": "EnclaveCreated", "id": "e"}, {"kind": "ExportWired", "conditional": True}]
    assert (
        diff_summary(maybe) == "2 change(s) would be applied (1 only if upstream outputs change)."
    )


def test_deletions_count_enclaves_with_their_partitions_and_lone_partitions() -> None:
    changes = [
        {"kind": "EnclaveDeleted", "id": "b"},
        {"kind": "PartitionDeleted", "enclave_id": "b", "partition_id": "p1"},
        {"kind": "PartitionDeleted", "enclave_id": "b", "partition_id": "p2"},
        {"kind": "EnclaveDeleted", "id": "a"},
        {"kind": "PartitionDeleted", "enclave_id": "c", "partition_id": "db"},
        {"kind": "ExportUnwired", "enclave_id": "c", "export_name": "x"},
        {"kind": "ImportUnwired", "importer_enclave": "c", "alias": "y"},
        {"kind": "EnclaveCreated", "id": "d"},
    ]
    assert deletions(changes) == ["enclave a", "enclave b", "partition c/db"]


def test_error_lines_keep_every_line_of_every_error() -> None:
    errors = ["step:a: failed\nError: one\n\n  detail", "step:b: boom"]
    assert error_lines(errors) == [
        "2 error(s):",
        "  ! step:a: failed",
        "    Error: one",
        "",
        "      detail",
        "  ! step:b: boom",
    ]
    assert error_lines([]) == []


def test_table_pads_columns_and_leaves_the_last_free() -> None:
    assert table(["A", "BB", "C"], [["x", "a-long-cell", "tail"]], [3, 5]) == [
        "A  BB   C",
        "x  a-long-cell tail",
    ]


RUNS = [
    {
        "id": "11111111-1111-1111-1111-111111111111",
        "operation": "provision",
        "status": "succeeded",
        "started_at": "2024-01-15T10:30:00.123456Z",
        "exit_code": 0,
    },
    {
        "id": "22222222-2222-2222-2222-222222222222",
        "operation": "teardown",
        "status": "running",
        "started_at": "2024-01-16T08:00:00.000000Z",
        "exit_code": None,
    },
]


def test_iac_runs_table_is_newest_first_in_the_documented_columns() -> None:
    assert iac_runs_table(RUNS) == [
        "ID                                    OPERATION   STATUS      STARTED               EXIT",
        "\u2500" * 90,
        "22222222-2222-2222-2222-222222222222  teardown    running     2024-01-16T08:00:00   null",
        "11111111-1111-1111-1111-111111111111  provision   succeeded   2024-01-15T10:30:00   0",
    ]


def test_iac_log_header() -> None:
    assert iac_log_header(RUNS[0]) == [
        "Run:       11111111-1111-1111-1111-111111111111",
        "Operation: provision  Status: succeeded  Exit: 0",
        "Started:   2024-01-15T10:30:00.123456Z",
        "\u2500" * 60,
    ]


def test_orphan_rows() -> None:
    rows = orphan_rows(
        [
            {
                "enclave_id": "e",
                "partition_id": "p",
                "resource_type": "storage.googleapis.com/Bucket",
                "resource_name": "b1",
            }
        ]
    )
    assert rows[0] == f"{'ENCLAVE':<22}{'PARTITION':<16}{'RESOURCE TYPE':<28}RESOURCE NAME"
    assert rows[1] == "\u2500" * 100
    # A cell wider than its column still keeps one space before the next.
    assert rows[2] == f"{'e':<22}{'p':<16}storage.googleapis.com/Bucket b1"


STEPS = [
    {
        "step_id": "provision_enclave:e",
        "action": "provision_enclave",
        "enclave_id": "e",
        "target": None,
        "status": "succeeded",
        "attempts": 1,
        "started_at": "2024-01-15T10:30:00.000000Z",
        "finished_at": "2024-01-15T10:30:00.250000Z",
    },
    {
        "step_id": "provision_partition:e/p",
        "action": "provision_partition",
        "enclave_id": "e",
        "target": "p",
        "status": "failed",
        "attempts": 4,
        "started_at": "2024-01-15T10:30:00.300000Z",
        "finished_at": "2024-01-15T10:31:10.300000Z",
        "error": "boom",
    },
]
RUN = {
    "id": "r1",
    "status": "failed",
    "trigger": "cli",
    "changes": 2,
    "bundle": "ab" * 32,
    "created_at": "2024-01-15T10:29:59.000000Z",
    "started_at": "2024-01-15T10:30:00.000000Z",
    "finished_at": "2024-01-15T10:31:10.500000Z",
    "errors": ["provision_partition:e/p: boom"],
    "steps": STEPS,
}


def test_step_label_and_run_summary() -> None:
    assert [step_label(s) for s in STEPS] == ["provision enclave e", "provision partition e/p"]
    assert run_summary(RUN) == "Run r1 failed in 1m10s: 1 succeeded, 1 failed."


def test_run_detail() -> None:
    lines = run_detail(RUN)
    assert lines[:7] == [
        "Run:       r1",
        "Status:    failed  Trigger: cli  Changes: 2",
        f"Bundle:    {'ab' * 32}",
        "Created:   2024-01-15T10:29:59.000000Z",
        "Started:   2024-01-15T10:30:00.000000Z",
        "Finished:  2024-01-15T10:31:10.500000Z  (1m10s)",
        "Steps:     2 (1 succeeded, 1 failed)",
    ]
    assert lines[8:] == [
        "STATUS     TIME    TRIES STEP",
        "succeeded  0.2s    1     provision enclave e",
        "failed     1m10s   4     provision partition e/p",
    ]


def test_run_detail_of_a_retry_shows_its_earlier_tries() -> None:
    earlier = {"attempt": 1, "run_id": "r0", "status": "failed", "errors": ["x: boom"]}
    retry = {**RUN, "retry_of": "r0", "attempt": 2, "attempts": [earlier]}
    retry["attempts"][0]["finished_at"] = "2024-01-15T10:20:00.000000Z"
    lines = run_detail(retry)
    assert lines[2:4] == [
        "Retry of:  r0 (try 2)",
        "  try 1: run r0 failed at 2024-01-15T10:20:00.000000Z (1 error)",
    ]
    assert lines[4] == f"Bundle:    {'ab' * 32}"


def test_status_lines() -> None:
    doc = {
        "active_drivers": ["local"],
        "by_status": {"active": 1, "error": 1},
        "default_cloud": "local",
        "enclave_count": 2,
        "errors": [{"enclave_id": "e", "partition_id": "p", "message": "boom\nmore"}],
        "last_reconciled_at": None,
    }
    assert status_lines(doc) == [
        "Enclaves: 2 (active: 1, error: 1)",
        "Default cloud: local",
        "Active drivers: local",
        "Last reconciled: never",
        "Errors: 1",
        "  ! e/p: boom",
    ]


def _enclave(eid: str, status: str = "active", **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "enclave_id": eid,
        "resolved_cloud": "local",
        "meta": {"status": status, "last_error": None},
        "desired": {
            "name": f"Enclave {eid}",
            "exports": [
                {"name": "api", "export_type": "http", "to": "any_enclave"},
                {"name": "db", "export_type": "tcp", "to": {"enclave": eid}},
            ],
            "imports": [],
            "partitions": [
                {"id": "db", "name": "Database", "produces": "tcp", "imports": []},
                {
                    "id": "api",
                    "name": "API",
                    "produces": "http",
                    "imports": [{"from": "up", "export_name": "api", "alias": "upstream"}],
                },
            ],
        },
        "partitions": {
            "db": {
                "meta": {"status": "error", "last_error": {"message": "tf failed\nlong"}},
                "resolved_outputs": {"port": "5432", "hostname": "db.local"},
            }
        },
    }
    doc.update(extra)
    return doc


def test_graph_text() -> None:
    assert graph_text([_enclave("e")]) == [
        "Enclave: Enclave e [local] (e) [active]",
        "  Partition: Database (db) [error]",
        "    ! error: tf failed",
        "    produces: tcp",
        "    output hostname: db.local",
        "    output port: 5432",
        "  Partition: API (api) [pending]",
        "    imports: up.api as upstream",
        "  Export: api (http) -> any_enclave",
        "  Export: db (tcp) -> enclave:e",
        "",
    ]


def test_graph_dot() -> None:
    assert graph_dot([_enclave("my-app.dev")]).split("\n") == [
        "digraph nclav {",
        "  rankdir=LR;",
        "  node [shape=box, style=filled];",
        "",
        "  subgraph cluster_my_app_dev {",
        '    label="Enclave my-app.dev [local] [active]";',
        '    "my-app.dev:db" [label="Database [error]", fillcolor="#ffcdd2"];',
        '    "my-app.dev:api" [label="API [pending]", fillcolor="#ffffff"];',
        "  }",
        "",
        '  "up" [label="up", style=dashed, fillcolor="#ffffff"];',
        "",
        '  "up" -> "my-app.dev:api" [label="api"];',
        "}",
    ]


def test_graph_dot_for_one_enclave_keeps_only_its_edges() -> None:
    dot = graph_dot([_enclave("a")], only="a")
    assert '"up" -> "a:api"' in dot
    assert graph_dot([_enclave("a")], only="b").count("->") == 0


def test_dot_labels_are_quoted() -> None:
    state = _enclave("e")
    state["desired"]["name"] = 'say "hi" \\ bye'  # type: ignore[index]
    assert 'label="say \\"hi\\" \\\\ bye [local] [active]";' in graph_dot([state])


def test_destroy_order_puts_importers_before_their_exporters() -> None:
    from nclav.cli.teardown import teardown_order

    def state(eid: str, *sources: str, partition_source: str | None = None) -> dict[str, object]:
        parts = []
        if partition_source:
            parts = [{"id": "p", "imports": [{"from": partition_source}]}]
        imports = [{"from": s} for s in sources]
        return {"enclave_id": eid, "desired": {"imports": imports, "partitions": parts}}

    enclaves = [
        state("hub"),
        state("data", "hub", "data"),  # an import of its own export does not order anything
        state("app", partition_source="data"),
        state("other", "elsewhere"),
    ]
    assert teardown_order(enclaves, ["hub", "data", "app", "other"]) == [
        "app",
        "data",
        "hub",
        "other",
    ]
    assert teardown_order(enclaves, ["hub", "app"]) == ["hub", "app"]  # not chained directly
    cycle = [state("a", "b"), state("b", "a")]
    assert sorted(teardown_order(cycle, ["a", "b"])) == ["a", "b"]


def test_plan_text_lists_each_import_under_its_own_enclave() -> None:
    """examples/product-a: web-dev imports from product-a-dev, which imports its own db-tcp.
    The plan wires imports last; the text still shows each under its importer (issue 8 §9)."""
    from nclav.cli.render import change_lines
    from nclav.config import load_directory
    from nclav.graph import validate_graph
    from nclav.plan import plan_changes
    from support import EXAMPLES

    graph = validate_graph(load_directory(EXAMPLES / "product-a" / "enclaves"))
    changes = [c.to_json() for c in plan_changes(graph, {}).changes]
    assert change_lines(changes) == [
        "+ enclave product-a-dev",
        "  + partition product-a-dev/db",
        "  + partition product-a-dev/api",
        "  > export product-a-dev/api-http",
        "  > export product-a-dev/db-tcp",
        "  < import product-a-dev/database",
        "+ enclave web-dev",
        "  + partition web-dev/frontend",
        "  < import web-dev/product_api",
    ]


def test_readme_plan_examples_are_the_real_plan_of_product_a() -> None:
    """The README's plan text is what `nclav diff examples/product-a/enclaves` prints."""
    import re

    from nclav.cli.render import change_lines, diff_summary
    from nclav.config import load_directory
    from nclav.graph import validate_graph
    from nclav.plan import plan_changes
    from support import EXAMPLES, REPO

    graph = validate_graph(load_directory(EXAMPLES / "product-a" / "enclaves"))
    changes = [c.to_json() for c in plan_changes(graph, {}).changes]
    real = "\n".join([*change_lines(changes), diff_summary(changes)])
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    fenced = re.findall(r"^```[a-z]*\n(.*?)\n```$", readme, re.S | re.M)
    blocks = [b for b in fenced if "would be applied" in b]
    assert blocks and all(block == real for block in blocks), blocks
