"""Template values come from the import's own handle first, then from the exporter."""

from __future__ import annotations

from nclav.config import load_directory
from nclav.graph import validate_graph
from nclav.plan import plan_changes, resolve_partition_inputs
from nclav.transitions import simulate_apply
from support import EXAMPLES

TREE = EXAMPLES / "product-a" / "enclaves"


def test_exporter_outputs_fill_tokens_when_the_import_handle_has_none() -> None:
    graph = validate_graph(load_directory(TREE))
    applied = simulate_apply(graph, {})
    inputs, problems = resolve_partition_inputs(graph, applied, "web-dev", "frontend")
    assert problems == []
    hostname = applied["product-a-dev"].partitions["api"].resolved_outputs["hostname"]
    assert inputs["api_endpoint"].startswith(f"https://{hostname}:")


def test_the_import_handle_outputs_win_and_a_change_there_reapplies_the_importer() -> None:
    graph = validate_graph(load_directory(TREE))
    applied = simulate_apply(graph, {})
    web = applied["web-dev"]
    handle = {**web.import_handles["product_api"], "outputs": {"hostname": "vpce-123.example"}}
    applied["web-dev"] = web.model_copy(
        update={"import_handles": {**web.import_handles, "product_api": handle}}
    )
    inputs, _ = resolve_partition_inputs(graph, applied, "web-dev", "frontend")
    assert inputs["api_endpoint"].startswith("https://vpce-123.example:")  # port: the exporter's
    text = plan_changes(graph, applied).render_text()
    assert "  ~ partition web-dev/frontend  (upstream outputs changed)" in text
