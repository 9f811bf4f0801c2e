"""``nclav schema enclave|partition``: JSON Schemas generated from the models, committed under
docs/schemas/, and accepting exactly what the examples hold (checked with ``jsonschema``, as an
editor's YAML language server would: on the YAML parsed with its own types)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from nclav.cli import main
from nclav.cli.init import FILES as INIT_FILES
from nclav.cli.schema import schema_text
from support import EXAMPLES, REPO

if TYPE_CHECKING:
    from pathlib import Path

SCHEMAS = REPO / "docs" / "schemas"


@pytest.mark.parametrize("kind", ["enclave", "partition"])
def test_committed_schemas_are_the_generated_ones(kind: str) -> None:
    committed = (SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(kind), f"regenerate: nclav schema {kind} > {SCHEMAS}/..."
    result = CliRunner().invoke(main, ["schema", kind])
    assert result.exit_code == 0 and result.stdout == committed


def validator(kind: str) -> jsonschema.protocols.Validator:
    import json

    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def configs() -> list[tuple[str, Path]]:
    found = []
    for tree in ("product-a", "chain"):
        for path in sorted((EXAMPLES / tree / "enclaves").rglob("config.yml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            found.append(("enclave" if "region" in doc else "partition", path))
    return found


@pytest.mark.parametrize(("kind", "path"), configs(), ids=lambda v: str(v).split("examples/")[-1])
def test_every_example_config_validates(kind: str, path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [e.message for e in validator(kind).iter_errors(doc)]
    assert errors == []


def test_the_init_tree_validates() -> None:
    for rel, text in INIT_FILES.items():
        if rel.endswith("config.yml"):
            kind = "enclave" if rel.count("/") == 1 else "partition"
            assert list(validator(kind).iter_errors(yaml.safe_load(text))) == [], rel


@pytest.mark.parametrize(
    ("kind", "doc", "where"),
    [
        ("enclave", {"id": "e", "name": "E", "region": "r", "cloud": "lcoal"}, "cloud"),
        ("enclave", {"id": "e", "name": "E"}, "region"),
        ("enclave", {"id": "e", "name": "E", "region": "r", "regoin": "x"}, "regoin"),
        ("enclave", {"id": "-e", "name": "E", "region": "r"}, "-e"),
        ("partition", {"id": "p", "name": "P", "inputs": {"9bad": "x"}}, "9bad"),
        ("partition", {"id": "p", "name": "P", "inputs": {"x": ["a"]}}, "['a']"),
        ("partition", {"id": "p", "name": "P", "produces": "ftp"}, "ftp"),
    ],
)
def test_what_the_loader_refuses_the_schema_refuses(kind: str, doc: object, where: str) -> None:
    errors = list(validator(kind).iter_errors(doc))
    assert errors and any(where in e.message or where in str(e.path) for e in errors), errors


def test_export_targets_accept_both_spellings() -> None:
    doc = {
        "id": "e",
        "name": "E",
        "region": "r",
        "exports": [
            {"name": "x", "target_partition": "p", "type": "http", "to": "any-enclave"},
            {"name": "y", "target_partition": "p", "type": "tcp", "to": {"enclave": "f"}},
        ],
    }
    assert list(validator("enclave").iter_errors(doc)) == []


def test_the_readme_schema_line_points_at_the_schema() -> None:
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"# yaml-language-server: \$schema=(\S+)\n", readme)
    assert found, "README shows no yaml-language-server line"
    config = EXAMPLES / "product-a" / "enclaves" / "product-a" / "dev" / "config.yml"
    assert (config.parent / found.group(1)).resolve() == (SCHEMAS / "enclave.schema.json")
