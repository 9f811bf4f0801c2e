"""``nclav schema enclave|partition``: the JSON Schema of a ``config.yml``, for editors.

Generated from the same pydantic models the loader validates with, then adjusted where the
loader is more lenient than the models' types (it reads every YAML scalar as text):
``inputs`` values may be numbers or booleans, and ``to: any-enclave`` is accepted. The
schemas are committed under docs/schemas/ (a test keeps them equal to this output).
"""

from __future__ import annotations

from typing import Any

import click

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("enclave", "partition")

# Shown by editors on hover; the README's reference holds the full rules.
_DESCRIPTIONS = {
    "id": "Unique id: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit.",
    "name": "Display name.",
    "cloud": "Where the enclave runs; omit to use the server's default cloud.",
    "region": "The cloud region (free text).",
    "identity": "Optional identity name (free text).",
    "network": "The enclave's network: vpc_cidr and subnets inside it.",
    "dns": "The enclave's private DNS zone.",
    "imports": "Exports of other enclaves (or this one) to read; alias names them in templates.",
    "exports": "What this enclave exposes, each served by one of its partitions.",
    "partitions": "Partition directories, in order; omit to use every subdirectory "
    "holding a config.yml.",
    "produces": "The kind of endpoint this partition provides (needs matching declared_outputs).",
    "backend": "The IaC tool that applies the partition.",
    "terraform": "source: a module to use instead of .tf files in the partition directory.",
    "inputs": "Terraform variables; values may use {{ alias.output }} and {{ nclav_* }} tokens.",
    "declared_outputs": "Terraform outputs the partition promises (readable by importers).",
}


def config_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of an enclave's or a partition's ``config.yml``."""
    from nclav.model import EnclaveConfig, PartitionConfig

    model = EnclaveConfig if kind == "enclave" else PartitionConfig
    schema = model.model_json_schema(by_alias=True, mode="validation")
    for key, prop in schema["properties"].items():
        if key in _DESCRIPTIONS:
            prop["description"] = _DESCRIPTIONS[key]
    inputs = schema["properties"].get("inputs")
    if inputs is not None:  # the loader keeps `20` and `true` as the text it reads
        for value in inputs.get("patternProperties", {}).values():
            value.pop("type", None)
            value["type"] = ["string", "number", "boolean"]
        inputs["additionalProperties"] = False
    to = schema.get("$defs", {}).get("Export", {}).get("properties", {}).get("to", {})
    for option in to.get("anyOf", []):
        if option.get("enum") and "any_enclave" in option["enum"]:
            option["enum"] = [*option["enum"], "any-enclave"]
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"nclav {kind} config.yml",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def schema_text(kind: str) -> str:
    """``config_schema`` as the committed file holds it: stable key order, a final newline."""
    import json

    return json.dumps(config_schema(kind), indent=2, sort_keys=True) + "\n"


@click.command(short_help="Print the JSON Schema of a config.yml.")
@click.argument("kind", type=click.Choice(KINDS))
def schema(kind: str) -> None:
    """Print the JSON Schema of an enclave's or a partition's config.yml (offline).

    Editors with the YAML language server validate and complete a config.yml that starts
    with `# yaml-language-server: $schema=<path or URL of the schema>`. The repository holds
    both under docs/schemas/.

    \b
    Example:
      nclav schema enclave > enclave.schema.json
      nclav schema partition > partition.schema.json
    """
    click.echo(schema_text(kind), nl=False)


__all__ = ["KINDS", "config_schema", "schema", "schema_text"]
