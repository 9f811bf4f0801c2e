"""The loader reports every problem at once, each as ``path:line: field: message`` (issue 8 §9).

* YAML read errors (invalid UTF-8, NUL, control characters) carry the line of the bad byte.
* A document that fails model validation does not stop the graph checks of the rest of the
  tree: a bad enum, a broken import and a bad template token are reported together.
* A file or directory name that is not UTF-8 is refused by ``nclav validate`` as by ``diff``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from nclav.cli import main
from support import EXAMPLES, SEED, spec_issues, write_tree

if TYPE_CHECKING:
    from pathlib import Path

ENCLAVE = "product-a/dev/config.yml"


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        (b"id: e\nname: E\nregion: r\x00x\n", 3, "character U+0000"),
        (b"id: e\nname: E\n\nregion: \xff\xfe\n", 4, "byte 0xff"),
        (b"id: e\n# caf\xc3\xa9\nname: E\x07\nregion: r\n", 3, "character U+0007"),
        (b"id: e\nname: \xc3\n", 2, "byte 0x0a: invalid trailing UTF-8"),
    ],
)
def test_yaml_read_errors_name_the_line(
    tmp_path: Path, content: bytes, line: int, what: str
) -> None:
    root = write_tree(tmp_path, {"e/config.yml": content})
    (issue,) = spec_issues(root)
    assert (issue.path, issue.line) == ("e/config.yml", line)
    assert issue.message.startswith(f"invalid YAML: unacceptable {what}")
    assert "\n" not in issue.message and "<byte string>" not in issue.message


def test_validate_prints_one_line_per_yaml_read_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"e/config.yml": b"id: e\nname: E\x00\nregion: r\n"})
    result = CliRunner().invoke(main, ["validate", str(root)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{root}/e/config.yml:2: invalid YAML: unacceptable character U+0000: "
        "control characters are not allowed",
        f"1 error(s) in {root}",
    ]


def test_a_bad_enum_does_not_hide_broken_references_and_templates(tmp_path: Path) -> None:
    files = dict(SEED)
    files[ENCLAVE] = (
        SEED[ENCLAVE]
        .replace("cloud: local", "cloud: lcoal")
        .replace("export_name: db-tcp", "export_name: db-tpc")
    )
    files["product-a/dev/db/config.yml"] += "  label: '{{ nclav_enclve }}'\n"
    files["product-a/dev/db/config.yml"] = (
        files["product-a/dev/db/config.yml"].replace("declared_outputs: [hostname, port]\n", "")
        + "declared_outputs: [hostname, port]\n"
    )
    root = write_tree(tmp_path, files)
    found = {(i.path, i.field): i.message for i in spec_issues(root)}
    assert found.pop((ENCLAVE, "cloud")).startswith("unknown value 'lcoal'")
    assert found.pop((ENCLAVE, "imports[0].export_name")).startswith(
        "enclave 'product-a-dev' has no export 'db-tpc'"
    )
    assert found.pop(("product-a/dev/db/config.yml", "inputs.label")).startswith(
        "unknown token '{{ nclav_enclve }}'"
    )
    assert found == {}


def test_a_broken_export_is_not_reported_again_by_its_importers(tmp_path: Path) -> None:
    """What the loader left out of a broken document does not come back as 'missing'."""
    files = dict(SEED)
    files[ENCLAVE] = SEED[ENCLAVE].replace("type: tcp", "type: tpc")
    root = write_tree(tmp_path, files)
    issues = spec_issues(root)
    assert [(i.path, i.line, i.field) for i in issues] == [(ENCLAVE, 13, "exports[1].type")]


def test_an_enclave_without_an_id_does_not_make_its_importers_fail(tmp_path: Path) -> None:
    files = dict(SEED)
    files["web/config.yml"] = "id: web\nname: W\nregion: r\nimports:\n" + (
        "  - {from: product-a-dev, export_name: api-http, alias: api}\n"
    )
    files[ENCLAVE] = SEED[ENCLAVE].replace("id: product-a-dev", "id: -bad")
    root = write_tree(tmp_path, files)
    assert [(i.path, i.field) for i in spec_issues(root)] == [(ENCLAVE, "id")]


def test_cycles_are_reported_with_other_problems(tmp_path: Path) -> None:
    files = {
        "a/config.yml": "id: a\nname: A\nregion: r\ncloud: nope\n"
        "imports: [{from: b, export_name: x, alias: bx}]\n"
        "exports: [{name: x, target_partition: p, type: http, to: any_enclave}]\n",
        "a/p/config.yml": "id: p\nname: P\nproduces: http\ndeclared_outputs: [hostname, port]\n",
        "a/p/main.tf": "",
        "b/config.yml": "id: b\nname: B\nregion: r\n"
        "imports: [{from: a, export_name: x, alias: ax}]\n"
        "exports: [{name: x, target_partition: p, type: http, to: any_enclave}]\n",
        "b/p/config.yml": "id: p\nname: P\nproduces: http\ndeclared_outputs: [hostname, port]\n",
        "b/p/main.tf": "",
    }
    root = write_tree(tmp_path, files)
    messages = [i.message for i in spec_issues(root)]
    assert any(m.startswith("unknown value 'nope'") for m in messages), messages
    assert any(m.startswith("enclave dependency cycle") for m in messages), messages


@pytest.mark.parametrize("as_dir", [False, True])
def test_validate_refuses_a_non_utf8_name(tmp_path: Path, as_dir: bool) -> None:
    root = write_tree(tmp_path / "tree", SEED)
    parent = os.fsencode(root / "product-a" / "dev" / "api")
    bad = parent + b"/caf\xe9" + (b"/x.tf" if as_dir else b".tf")
    os.makedirs(os.path.dirname(bad), exist_ok=True)
    with open(bad, "wb") as fh:
        fh.write(b"")
    result = CliRunner().invoke(main, ["validate", str(root)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{root}/product-a/dev/api/caf\\xe9{'' if as_dir else '.tf'}: "
        "file name is not valid UTF-8: rename it",
        f"1 error(s) in {root}",
    ]


def test_validate_of_an_unreadable_tree_is_a_path_error(tmp_path: Path) -> None:
    """A symbolic link that cannot be resolved is a path error (exit 2), not a crash."""
    try:
        os.path.realpath("/proc/1/cwd")
    except PermissionError:
        pass
    else:
        pytest.skip("needs /proc/1/cwd to be unreadable (a user other than pid 1's)")
    result = CliRunner().invoke(main, ["validate", "/proc/1"])
    assert result.exit_code == 2, result.output
    assert "unexpected" not in result.output


def test_the_examples_still_validate() -> None:
    for tree in ("product-a", "chain"):
        result = CliRunner().invoke(main, ["validate", str(EXAMPLES / tree / "enclaves")])
        assert result.exit_code == 0, result.output


def test_diff_refuses_the_same_non_utf8_name(tmp_path: Path) -> None:
    """`diff` packs with the same loader: the bundle never silently leaves the file out."""
    from nclav.bundle import pack_directory
    from nclav.errors import SpecError

    root = write_tree(tmp_path / "tree", SEED)
    with open(os.fsencode(root / "product-a" / "dev" / "db") + b"/x\xff.tf", "wb") as fh:
        fh.write(b"")
    with pytest.raises(SpecError) as caught:
        pack_directory(root)
    assert [i.render() for i in caught.value.issues] == [
        f"{root}/product-a/dev/db/x\\xff.tf: file name is not valid UTF-8: rename it"
    ]
