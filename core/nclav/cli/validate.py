"""``nclav validate DIR``: the offline check of an enclaves tree (no server needed)."""

from __future__ import annotations

import sys

import click

from nclav.cli.common import EXIT_INVALID


@click.command(short_help="Check an enclaves tree offline (no server).")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--output",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Result format; json is for machines.",
)
@click.option(
    "--default-cloud",
    type=click.Choice(["local", "gcp", "azure", "aws"]),
    default=None,
    help="Cloud of enclaves that omit `cloud:` (as the server would resolve it).",
)
def validate(directory: str, output: str, default_cloud: str | None) -> None:
    """Check an enclaves directory offline: YAML, references, access, cycles, networks.

    Every problem is reported as `path:line: field: message`. Exits 0 when valid, 2 when not.

    \b
    Example:
      nclav validate ./enclaves
      nclav validate ./enclaves --output json | jq '.errors[].message'
    """
    import json

    from nclav.config import load_directory
    from nclav.errors import SpecError
    from nclav.graph import validate_graph
    from nclav.model import Cloud

    try:
        desired = load_directory(directory)
        graph = validate_graph(desired, Cloud(default_cloud) if default_cloud else None)
    except SpecError as exc:
        if output == "json":
            doc = {"valid": False, "errors": [i.to_json() for i in exc.issues]}
            click.echo(json.dumps(doc, indent=2, sort_keys=True))
        else:
            for issue in exc.issues:
                click.echo(issue.render(), err=True)
            click.echo(f"{len(exc.issues)} error(s) in {directory}", err=True)
        sys.exit(EXIT_INVALID)
    enclaves = len(graph.enclaves)
    partitions = sum(len(e.partitions) for e in graph.enclaves.values())
    exports = sum(len(e.config.exports) for e in graph.enclaves.values())
    imports = sum(len(a) for a in graph.aliases.values())
    if output == "json":
        counts = {
            "enclaves": enclaves,
            "partitions": partitions,
            "exports": exports,
            "imports": imports,
        }
        click.echo(
            json.dumps({"valid": True, "errors": [], "counts": counts}, indent=2, sort_keys=True)
        )
    else:
        click.echo(
            f"valid: {enclaves} enclave(s), {partitions} partition(s), "
            f"{exports} export(s), {imports} import(s) in {directory}"
        )


__all__ = ["validate"]
