"""``nclav graph --output dot`` renders with Graphviz, and its edges join partition nodes
(issue 8 §9: edges used to point at enclave ids, which Graphviz drew as stray extra nodes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from nclav.cli.render import graph_dot


def dot_binary() -> str:
    found = shutil.which("dot")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("graphviz `dot` is not installed (apt-get install -y graphviz)")
    pytest.skip("graphviz `dot` is not installed (apt-get install -y graphviz); CI runs it")


def render(source: str) -> dict[str, object]:
    """``dot -Tsvg`` must succeed without a warning; the layout as ``dot -Tjson`` gives it."""
    dot = dot_binary()
    svg = subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True, check=False)
    assert svg.returncode == 0 and svg.stderr == "", svg.stderr
    assert "<svg" in svg.stdout
    layout = subprocess.run(
        [dot, "-Tjson"], input=source, capture_output=True, text=True, check=True
    )
    assert layout.stderr == ""
    doc: dict[str, object] = json.loads(layout.stdout)
    return doc


def edges_and_nodes(doc: dict[str, object]) -> tuple[set[tuple[str, str, str]], dict[str, str]]:
    objects = doc.get("objects") or []
    assert isinstance(objects, list)
    names = {o["_gvid"]: o["name"] for o in objects}
    clusters = {o["name"] for o in objects if str(o["name"]).startswith("cluster_")}
    parent: dict[str, str] = {}
    for o in objects:
        if o["name"] in clusters:
            for node in o.get("nodes") or []:
                parent[names[node]] = o["name"]
    nodes = {n: parent.get(n, "") for n in names.values() if n not in clusters}
    edges_doc = doc.get("edges") or []
    assert isinstance(edges_doc, list)
    edges = {(names[e["tail"]], names[e["head"]], e["label"]) for e in edges_doc}
    return edges, nodes


def state(eid: str, partitions: list[dict[str, object]], **desired: object) -> dict[str, object]:
    return {
        "enclave_id": eid,
        "resolved_cloud": "local",
        "meta": {"status": "active", "last_error": None},
        "desired": {"name": eid, "partitions": partitions, **desired},
        "partitions": {},
    }


# examples/product-a as the server holds it, plus a partition-level import into `web-dev`.
PRODUCT_A = [
    state(
        "product-a-dev",
        [{"id": "api", "name": "API", "imports": []}, {"id": "db", "name": "DB", "imports": []}],
        exports=[
            {"name": "api-http", "target_partition": "api", "export_type": "http"},
            {"name": "db-tcp", "target_partition": "db", "export_type": "tcp"},
        ],
        imports=[{"from": "product-a-dev", "export_name": "db-tcp", "alias": "database"}],
    ),
    state(
        "web-dev",
        [
            {
                "id": "frontend",
                "name": "Front end",
                "imports": [{"from": "product-a-dev", "export_name": "db-tcp", "alias": "db"}],
            }
        ],
        exports=[],
        imports=[{"from": "product-a-dev", "export_name": "api-http", "alias": "product_api"}],
    ),
]


def test_edges_join_the_exporting_partition_to_the_importer() -> None:
    edges, nodes = edges_and_nodes(render(graph_dot(PRODUCT_A)))
    assert edges == {
        ("product-a-dev:db", "product-a-dev", "db-tcp"),
        ("product-a-dev:api", "web-dev", "api-http"),
        ("product-a-dev:db", "web-dev:frontend", "db-tcp"),
    }
    assert nodes == {
        "product-a-dev": "cluster_product_a_dev",
        "product-a-dev:api": "cluster_product_a_dev",
        "product-a-dev:db": "cluster_product_a_dev",
        "web-dev": "cluster_web_dev",
        "web-dev:frontend": "cluster_web_dev",
    }


def test_one_enclave_draws_the_far_ends_outside_its_cluster() -> None:
    edges, nodes = edges_and_nodes(render(graph_dot(PRODUCT_A, only="web-dev")))
    assert edges == {
        ("product-a-dev:api", "web-dev", "api-http"),
        ("product-a-dev:db", "web-dev:frontend", "db-tcp"),
    }
    assert nodes == {
        "product-a-dev:api": "",
        "product-a-dev:db": "",
        "web-dev": "cluster_web_dev",
        "web-dev:frontend": "cluster_web_dev",
    }


def test_an_exporter_the_server_does_not_hold_is_a_node_of_its_own() -> None:
    edges, nodes = edges_and_nodes(render(graph_dot(PRODUCT_A[1:])))
    assert ("product-a-dev", "web-dev", "api-http") in edges
    assert nodes["product-a-dev"] == ""
