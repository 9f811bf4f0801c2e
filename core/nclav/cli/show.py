"""Read-only views of applied state: ``status``, ``graph`` and ``orphans``."""

from __future__ import annotations

from typing import Any

import click

from nclav.cli.common import CliError, client, err, global_options, out, output_option, print_json


@click.command(short_help="Summarise the server: enclaves, cloud, drivers.")
@output_option("text", "json")
@global_options
def status(output: str) -> None:
    """Summarise the server: enclaves by status, default cloud, drivers, recorded errors.

    Exits 0 whenever the server answers (errors recorded on enclaves are shown, not fatal).

    \b
    Example:
      nclav status
      nclav status --output json | jq .by_status
    """
    from nclav.cli.render import status_lines

    doc = client().get("/status")
    if output == "json":
        print_json(doc)
        return
    for line in status_lines(doc):
        out(line)


@click.command(short_help="Show the dependency graph (text, dot, json).")
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Choice(["text", "json", "dot"]),
    default="text",
    show_default=True,
    help="text for people, dot for Graphviz, json as the server sends it.",
)
@click.option("--enclave", "enclave", metavar="ID", help="Only this enclave.")
@global_options
def graph(output: str, enclave: str | None) -> None:
    """Show the dependency graph of applied state: enclaves, partitions, exports, imports.

    text and dot are rendered here from the applied state (GET /enclaves); json is the
    server's graph (GET /graph, or GET /enclaves/ID/graph with --enclave).

    \b
    Example:
      nclav graph
      nclav graph --enclave product-a-dev
      nclav graph --output dot | dot -Tsvg > graph.svg
    """
    from nclav.cli.client import seg
    from nclav.cli.render import graph_dot, graph_text, select

    api = client()
    if output == "json":
        print_json(api.get(f"/enclaves/{seg(enclave)}/graph" if enclave else "/graph"))
        return
    enclaves: list[dict[str, Any]] = api.get("/enclaves")
    chosen = select(enclaves, enclave)
    if enclave is not None and not chosen:
        raise CliError(f"enclave {enclave!r} not found")
    if output == "dot":
        out(graph_dot(enclaves, enclave))  # all of them: an edge starts at its exporter
        return
    if not chosen:
        err("No enclaves applied yet.")
        return
    out("\n".join(graph_text(chosen)).rstrip("\n"))


@click.command(short_help="List tagged cloud resources no partition owns.")
@click.option("--enclave", "enclave", metavar="ID", help="Only orphans of this enclave.")
@output_option("text", "json")
@global_options
def orphans(enclave: str | None, output: str) -> None:
    """List what nclav made that no applied partition owns: cloud resources tagged as
    nclav-managed, and Terraform state or workspaces the server still holds.

    Useful after a failed destroy. Every driver of the server is asked; one that could not be
    is named on stderr. Exits 0 when there are none and every driver answered, 1 otherwise
    (CI-friendly).

    \b
    Example:
      nclav orphans
      nclav orphans --enclave product-a-dev --output json
    """
    from nclav.cli.render import orphan_enclave, orphan_rows

    doc = client().get("/orphans")
    found = [o for o in doc.get("orphans") or [] if enclave is None or orphan_enclave(o) == enclave]
    unavailable = doc.get("unavailable") or []
    if output == "json":
        print_json({"orphans": found, **({"unavailable": unavailable} if unavailable else {})})
    elif not found:
        out("No orphaned resources found.")
    else:
        for line in orphan_rows(found):
            out(line)
    for missing in unavailable:
        err(
            f"warning: the {missing.get('cloud')} driver could not be asked: {missing.get('error')}"
        )
    if found:
        raise CliError(f"{len(found)} orphaned resource(s) found")
    if unavailable:
        raise CliError(f"{len(unavailable)} driver(s) could not be asked for orphans")


__all__ = ["graph", "orphans", "status"]
