"""Content hashes depend on meaning and file content, never on formatting or location."""

from __future__ import annotations

import hashlib
import shutil
from typing import TYPE_CHECKING

from nclav.config import load_bundle, load_directory
from nclav.graph import validate_graph
from nclav.hashing import canonical_json, digest, enclave_hash, partition_hash
from support import SEED, load_graph, write_tree

if TYPE_CHECKING:
    from pathlib import Path

    from nclav.graph import Graph

ENCLAVE = "product-a-dev"


def hashes(graph: Graph) -> dict[str, str]:
    out = {}
    for eid, enclave in graph.enclaves.items():
        out[eid] = enclave_hash(enclave)
        out.update({f"{eid}/{p.id}": partition_hash(p) for p in enclave.partitions})
    return out


def seed_hashes(root: Path, **overrides: str) -> dict[str, str]:
    return hashes(load_graph(write_tree(root, {**SEED, **overrides})))


def test_canonical_json_is_compact_sorted_and_utf8() -> None:
    assert canonical_json({"b": [2, 1], "a": {"z": "é", "y": None}}) == (
        '{"a":{"y":null,"z":"é"},"b":[2,1]}'.encode()
    )
    assert digest({"x": 1}) == hashlib.sha256(b'{"x":1}').hexdigest()


def test_same_tree_in_two_places_has_the_same_hashes(tmp_path: Path) -> None:
    first = seed_hashes(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "deeper" / "two")
    second = hashes(load_graph(tmp_path / "elsewhere" / "deeper" / "two"))
    assert first == second
    assert len(first) == 3


def test_display_root_and_bundle_do_not_change_hashes(tmp_path: Path) -> None:
    root = write_tree(tmp_path, SEED)
    on_disk = hashes(load_graph(root))
    shown = hashes(validate_graph(load_directory(root, display_root="/some/other/name")))
    bundle = {k: v.encode() for k, v in SEED.items()}
    uploaded = hashes(validate_graph(load_bundle(bundle, display_root="upload")))
    assert on_disk == shown == uploaded


REFORMATTED_ENCLAVE = """\
# same values: flow style, other key order, other quoting, comments
imports: [{alias: database, export_name: 'db-tcp', from: "product-a-dev"}]
exports:
  - {to: any_enclave, type: http, name: api-http, auth: token, target_partition: api}
  - to:
      enclave: product-a-dev
    target_partition: "db"
    type: tcp
    name: db-tcp
region: 'local-1'
cloud: "local"
name: "Product A (Development)"
id: product-a-dev
"""

REFORMATTED_DB = """\
declared_outputs:
- hostname
- "port"
inputs: {engine: 'postgres'}
produces: tcp
name: Database
id: "db"
"""


def test_yaml_formatting_key_order_and_quoting_do_not_change_hashes(tmp_path: Path) -> None:
    plain = seed_hashes(tmp_path / "plain")
    styled = seed_hashes(
        tmp_path / "styled",
        **{
            "product-a/dev/config.yml": REFORMATTED_ENCLAVE,
            "product-a/dev/db/config.yml": REFORMATTED_DB,
        },
    )
    assert styled == plain


def test_defaults_written_out_hash_like_defaults_left_out(tmp_path: Path) -> None:
    plain = seed_hashes(tmp_path / "plain")
    explicit_db = SEED["product-a/dev/db/config.yml"] + "backend: terraform\nimports: []\n"
    explicit = seed_hashes(tmp_path / "explicit", **{"product-a/dev/db/config.yml": explicit_db})
    assert explicit == plain


def test_export_type_alias_spelling_does_not_change_the_hash(tmp_path: Path) -> None:
    plain = seed_hashes(tmp_path / "plain")
    text = SEED["product-a/dev/config.yml"].replace("type: http", "export_type: http")
    assert seed_hashes(tmp_path / "alias", **{"product-a/dev/config.yml": text}) == plain


def test_editing_main_tf_changes_only_that_partition(tmp_path: Path) -> None:
    before = seed_hashes(tmp_path / "before")
    after = seed_hashes(tmp_path / "after", **{"product-a/dev/db/main.tf": 'variable "x" {}\n'})
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {f"{ENCLAVE}/db"}


def test_adding_a_file_to_a_partition_changes_its_hash(tmp_path: Path) -> None:
    before = seed_hashes(tmp_path / "before")
    after = seed_hashes(tmp_path / "after", **{"product-a/dev/api/extra.tf": ""})
    assert {k for k in before if before[k] != after[k]} == {f"{ENCLAVE}/api"}


def test_renaming_a_partition_file_changes_its_hash(tmp_path: Path) -> None:
    before = seed_hashes(tmp_path / "before")
    files = dict(SEED)
    files["product-a/dev/db/db.tf"] = files.pop("product-a/dev/db/main.tf")
    after = hashes(load_graph(write_tree(tmp_path / "after", files)))
    assert {k for k in before if before[k] != after[k]} == {f"{ENCLAVE}/db"}


def test_changing_an_enclave_field_changes_only_the_enclave_hash(tmp_path: Path) -> None:
    before = seed_hashes(tmp_path / "before")
    text = SEED["product-a/dev/config.yml"].replace("region: local-1", "region: local-2")
    after = seed_hashes(tmp_path / "after", **{"product-a/dev/config.yml": text})
    assert {k for k in before if before[k] != after[k]} == {ENCLAVE}


def test_changing_an_input_changes_the_partition_hash(tmp_path: Path) -> None:
    before = seed_hashes(tmp_path / "before")
    text = SEED["product-a/dev/db/config.yml"].replace("postgres", "mysql")
    after = seed_hashes(tmp_path / "after", **{"product-a/dev/db/config.yml": text})
    assert {k for k in before if before[k] != after[k]} == {f"{ENCLAVE}/db"}


def test_input_text_not_its_value_is_hashed(tmp_path: Path) -> None:
    # 0755 and 493 are the same YAML 1.1 integer, but different text for terraform.
    text = SEED["product-a/dev/db/config.yml"].replace("engine: postgres", "engine: 0755")
    octal = seed_hashes(tmp_path / "octal", **{"product-a/dev/db/config.yml": text})
    text = SEED["product-a/dev/db/config.yml"].replace("engine: postgres", "engine: 493")
    decimal = seed_hashes(tmp_path / "decimal", **{"product-a/dev/db/config.yml": text})
    assert octal[f"{ENCLAVE}/db"] != decimal[f"{ENCLAVE}/db"]
