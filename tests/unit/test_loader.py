"""Loading an enclaves tree: the walk, the YAML, the field checks and every loader error."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import pytest

from nclav.config import load_bundle, load_directory
from nclav.errors import SpecError
from nclav.hashing import enclave_hash, partition_hash
from nclav.model import EnclaveTarget, PartitionTarget
from support import EXAMPLES, HTTP, enclave_files, load_graph, only_issue, spec_issues, write_tree

if TYPE_CHECKING:
    from pathlib import Path

ENCLAVE = "id: e\nname: E\nregion: r\n"
PART = "id: p\nname: P\n"


def load(root: Path):  # noqa: ANN201 - a Desired
    return load_directory(root, display_root="")


def one_partition_tree(tmp_path: Path, partition_text: str) -> Path:
    return write_tree(
        tmp_path,
        {"e/config.yml": ENCLAVE, "e/p/config.yml": partition_text, "e/p/main.tf": ""},
    )


# -- the walk ------------------------------------------------------------------------------


def test_nested_enclave_directories_are_found(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **enclave_files("product-a/dev", enclave_id="product-a-dev", api=HTTP),
            **enclave_files("product-a/prod", enclave_id="product-a-prod", api=HTTP),
            "product-a/README.md": "not part of any enclave",
        },
    )
    desired = load(root)
    assert [(e.id, e.dir, e.path) for e in desired.enclaves] == [
        ("product-a-dev", "product-a/dev", "product-a/dev/config.yml"),
        ("product-a-prod", "product-a/prod", "product-a/prod/config.yml"),
    ]
    assert [(p.id, p.dir) for p in desired.enclaves[0].partitions] == [("api", "product-a/dev/api")]


def test_examples_tree_loads() -> None:
    desired = load_directory(EXAMPLES / "product-a" / "enclaves")
    assert [e.id for e in desired.enclaves] == ["product-a-dev", "web-dev"]
    assert [p.id for p in desired.enclaves[0].partitions] == ["api", "db"]


def test_walk_is_sorted_at_every_level_whatever_the_creation_order(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", "mid"):
        write_tree(tmp_path, enclave_files(name, z="", a="", m=""))
    desired = load(tmp_path)
    assert [e.id for e in desired.enclaves] == ["alpha", "mid", "zeta"]
    assert all([p.id for p in e.partitions] == ["a", "m", "z"] for e in desired.enclaves)
    assert desired.files_read[:4] == (
        "alpha/config.yml",
        "alpha/a/config.yml",
        "alpha/a/main.tf",
        "alpha/m/config.yml",
    )


def test_walk_stops_at_the_first_enclave(tmp_path: Path) -> None:
    # A partition's own subdirectory with a config.yml is a file of that partition, not a
    # partition or an enclave.
    root = write_tree(tmp_path, {**enclave_files("e", p=""), "e/p/module/config.yml": "x: 1\n"})
    (enclave,) = load(root).enclaves
    assert [p.id for p in enclave.partitions] == ["p"]
    assert [name for name, _ in enclave.partitions[0].files] == ["main.tf", "module/config.yml"]


def test_subdirectory_without_config_is_not_a_partition(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {**enclave_files("e", p=""), "e/modules/vpc/main.tf": ""})
    assert [p.id for p in load(root).enclaves[0].partitions] == ["p"]


def test_explicit_partitions_list_sets_members_and_order(tmp_path: Path) -> None:
    root = write_tree(tmp_path, enclave_files("e", "partitions: [q, p]\n", p="", q="", r=""))
    assert [p.id for p in load(root).enclaves[0].partitions] == ["q", "p"]


def test_listed_partition_without_config_is_an_error(tmp_path: Path) -> None:
    files = enclave_files("e", "partitions:\n  - p\n  - missing\n", p="")
    issue = only_issue(write_tree(tmp_path, {**files, "e/missing/main.tf": ""}))
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 6, "partitions[1]")
    assert "'missing' has no config.yml" in issue.message


def test_partitions_entry_must_be_a_plain_name(tmp_path: Path) -> None:
    issue = only_issue(write_tree(tmp_path, enclave_files("e", "partitions: [[a]]\n")))
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 4, "partitions[0]")
    assert "expected text" in issue.message


def test_hidden_files_and_directories_are_ignored(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **enclave_files("e", p=""),
            ".git/config.yml": "[broken",
            "e/.cache/config.yml": "[broken",
            "e/p/.terraform/providers.tf": "x",
            "e/p/.notes.tf": "x",
        },
    )
    desired = load(root)
    assert [p.id for p in desired.enclaves[0].partitions] == ["p"]
    assert [name for name, _ in desired.enclaves[0].partitions[0].files] == ["main.tf"]
    assert not any("/." in f or f.startswith(".") for f in desired.files_read)


def test_terraform_state_files_are_not_partition_files(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **enclave_files("e", p=""),
            "e/p/terraform.tfstate": "{}",
            "e/p/terraform.tfstate.backup": "{}",
            "e/p/terraform.tfstate.d/ws/terraform.tfstate": "{}",
            "e/p/variables.tf": "",
        },
    )
    files = load(root).enclaves[0].partitions[0].files
    assert [name for name, _ in files] == ["main.tf", "variables.tf"]


def test_symlink_inside_the_tree_is_followed(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {**enclave_files("e", p=""), "shared/common.tf": "x"})
    os.symlink(root / "shared" / "common.tf", root / "e" / "p" / "common.tf")
    files = load(root).enclaves[0].partitions[0].files
    assert [name for name, _ in files] == ["common.tf", "main.tf"]


def test_symlink_pointing_outside_the_tree_is_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.tf": "x"})
    root = write_tree(tmp_path / "tree", enclave_files("e", p=""))
    os.symlink(outside / "secret.tf", root / "e" / "p" / "secret.tf")
    with pytest.raises(SpecError) as caught:
        load(root)
    (issue,) = caught.value.issues
    assert (issue.path, issue.line) == ("e/p/secret.tf", None)
    assert "points outside the enclaves directory" in issue.message


def test_symlinked_directory_outside_the_tree_is_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", enclave_files("x"))
    root = write_tree(tmp_path / "tree", enclave_files("e", p=""))
    os.symlink(outside / "x", root / "x")
    with pytest.raises(SpecError, match="x: symbolic link points outside"):
        load(root)


def test_symlink_loop_inside_the_tree_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path, enclave_files("e", p=""))
    os.symlink(root / "e" / "p", root / "e" / "p" / "loop")
    with pytest.raises(SpecError) as caught:
        load(root)
    (issue,) = caught.value.issues
    assert issue.path == "e/p/loop"
    assert "a loop" in issue.message


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_enclaves_directory_must_exist(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "enclaves"
    if kind == "file":
        target.write_text("")
    with pytest.raises(SpecError) as caught:
        load_directory(target)
    (issue,) = caught.value.issues
    assert issue.path == str(target)
    assert issue.message == (
        "enclaves directory does not exist"
        if kind == "missing"
        else "enclaves directory is not a directory"
    )


def test_empty_directory_is_an_empty_tree(tmp_path: Path) -> None:
    assert load(tmp_path).enclaves == ()


# -- broken documents are errors, never skipped ----------------------------------------------


def test_broken_enclave_yaml_is_an_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"e/config.yml": "id: e\nname: [unclosed\nregion: r\n"})
    issue = only_issue(root)
    assert (issue.path, issue.field) == ("e/config.yml", "")
    assert issue.line in (2, 3)
    assert issue.message.startswith("invalid YAML:")


def test_broken_partition_yaml_is_an_error(tmp_path: Path) -> None:
    root = one_partition_tree(tmp_path, "id: p\nname: P\ninputs: {a: 1\n")
    issue = only_issue(root)
    assert (issue.path, issue.field) == ("e/p/config.yml", "")
    assert issue.message.startswith("invalid YAML:")


def test_enclave_with_typo_in_required_key_is_an_error_not_a_deletion(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"e/config.yml": "id: e\nname: E\nregoin: r\n"})
    issue = only_issue(root)
    assert (issue.path, issue.line) == ("e/config.yml", 1)
    assert "not an enclave config" in issue.message and "region" in issue.message


def test_missing_required_field(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"e/config.yml": "id: e\ncloud: local\nregion: r\n"})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 1, "name")
    assert issue.message == "required field is missing"


def test_empty_file(tmp_path: Path) -> None:
    issue = only_issue(write_tree(tmp_path, {"e/config.yml": "# nothing here\n"}))
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 1, "")
    assert "file is empty" in issue.message


@pytest.mark.parametrize("text", ["- id: e\n- name: E\n", "just text\n", "42\n"])
def test_non_mapping_document(tmp_path: Path, text: str) -> None:
    issue = only_issue(write_tree(tmp_path, {"e/config.yml": text}))
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 1, "")
    assert issue.message == "expected a mapping of keys to values"


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"e/config.yml": "id: e\nname: E\nregion: r\nname: F\n"})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 4, "name")
    assert issue.message == "duplicate key 'name'"


def test_recursive_alias_is_a_spec_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"e/config.yml": "id: e\nname: E\nregion: r\nx: &a [*a]\n"})
    issue = only_issue(root)
    assert (issue.path, issue.field) == ("e/config.yml", "")
    assert "recursive alias" in issue.message


def test_billion_laughs_is_a_spec_error(tmp_path: Path) -> None:
    lines = ["id: e", "name: E", "region: r", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]")
    issue = only_issue(write_tree(tmp_path, {"e/config.yml": "\n".join(lines) + "\n"}))
    assert (issue.path, issue.field) == ("e/config.yml", "")
    assert "too large after expanding aliases" in issue.message


def test_all_loader_errors_are_collected_sorted_by_file(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "b/config.yml": "id: b\nname: B\nregion: r\ncloud: mars\n",
            "a/config.yml": "",
            **enclave_files("c", p="produces: grpc\n"),
        },
    )
    issues = spec_issues(root)
    assert [(i.path, i.line, i.field) for i in issues] == [
        ("a/config.yml", 1, ""),
        ("b/config.yml", 4, "cloud"),
        ("c/p/config.yml", 3, "produces"),
    ]


# -- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "text", "line", "field", "message"),
    [
        (
            "e/config.yml",
            "id: e\nname: E\nregion: r\nregoin: s\n",
            4,
            "regoin",
            "unknown key 'regoin' (did you mean 'region'?)",
        ),
        (
            "e/config.yml",
            "id: e\nname: E\nregion: r\nexports:\n  - name: x\n"
            "    target_partiton: p\n    target_partition: p\n    type: http\n    to: public\n",
            6,
            "exports[0].target_partiton",
            "unknown key 'target_partiton' (did you mean 'target_partition'?)",
        ),
        (
            "e/config.yml",
            "id: e\nname: E\nregion: r\nimports:\n  - from: x\n    export_name: y\n"
            "    alias: z\n    alais: z\n",
            8,
            "imports[0].alais",
            "unknown key 'alais' (did you mean 'alias'?)",
        ),
        (
            "e/config.yml",
            "id: e\nname: E\nregion: r\nnetwork:\n  vpc_cidrs: 10.0.0.0/16\n",
            5,
            "network.vpc_cidrs",
            "unknown key 'vpc_cidrs' (did you mean 'vpc_cidr'?)",
        ),
        (
            "e/p/config.yml",
            "id: p\nname: P\ndeclared_output: [x]\n",
            3,
            "declared_output",
            "unknown key 'declared_output' (did you mean 'declared_outputs'?)",
        ),
        (
            "e/p/config.yml",
            "id: p\nname: P\nterraform:\n  sorce: x\n",
            4,
            "terraform.sorce",
            "unknown key 'sorce' (did you mean 'source'?)",
        ),
        ("e/p/config.yml", "id: p\nname: P\nzzz: 1\n", 3, "zzz", "; expected one of: backend,"),
    ],
)
def test_unknown_keys(
    tmp_path: Path, rel: str, text: str, line: int, field: str, message: str
) -> None:
    files = {"e/config.yml": ENCLAVE, "e/p/main.tf": "", "e/p/config.yml": PART, rel: text}
    issue = only_issue(write_tree(tmp_path, files))
    assert (issue.path, issue.line, issue.field) == (rel, line, field)
    assert message in issue.message


def test_known_keys_only_is_valid(tmp_path: Path) -> None:
    text = PART + "backend: opentofu\nterraform:\n  tool: tofu\n"
    root = one_partition_tree(tmp_path, text)
    part = load(root).enclaves[0].partitions[0]
    assert (part.config.backend.value, part.config.terraform.tool) == ("opentofu", "tofu")


# -- enum values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "extra", "line", "field", "message"),
    [
        ("e/config.yml", "cloud: mars\n", 4, "cloud", "unknown value 'mars': expected 'local'"),
        ("e/config.yml", "cloud: GCP\n", 4, "cloud", "unknown value 'GCP'"),
        ("e/p/config.yml", "produces: grpc\n", 3, "produces", "unknown value 'grpc'"),
        (
            "e/p/config.yml",
            "backend: pulumi\n",
            3,
            "backend",
            "unknown value 'pulumi': expected 'terraform' or 'opentofu'",
        ),
        (
            "e/p/config.yml",
            "backend: managed\n",
            3,
            "backend",
            "backend 'managed' is no longer supported; use terraform or opentofu",
        ),
        (
            "e/config.yml",
            "exports:\n  - name: x\n    target_partition: p\n    type: udp\n    to: public\n",
            7,
            "exports[0].type",
            "unknown value 'udp': expected 'http'",
        ),
        (
            "e/config.yml",
            "exports:\n  - name: x\n    target_partition: p\n    type: http\n"
            "    to: public\n    auth: basic\n",
            9,
            "exports[0].auth",
            "unknown value 'basic': expected 'none', 'token', 'oauth', 'mtls' or 'native'",
        ),
        (
            "e/config.yml",
            "exports:\n  - name: x\n    target_partition: p\n    type: http\n"
            "    to: public\n    port: 70000\n",
            9,
            "exports[0].port",
            "65535",
        ),
    ],
)
def test_invalid_field_values(
    tmp_path: Path, rel: str, extra: str, line: int, field: str, message: str
) -> None:
    files = {"e/config.yml": ENCLAVE, "e/p/config.yml": PART, "e/p/main.tf": ""}
    files[rel] += extra
    issue = only_issue(write_tree(tmp_path, files))
    assert (issue.path, issue.line, issue.field) == (rel, line, field)
    assert message in issue.message


def test_id_must_be_url_safe(tmp_path: Path) -> None:
    issue = only_issue(write_tree(tmp_path, {"e/config.yml": "name: E\nregion: r\nid: a b\n"}))
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 3, "id")
    assert "'a b' is not valid: expected 1-63 letters, digits" in issue.message


@pytest.mark.parametrize(
    ("cloud", "produces", "backend"),
    [
        ("local", "http", "terraform"),
        ("gcp", "tcp", "opentofu"),
        ("aws", "queue", "terraform"),
        ("azure", "http", "opentofu"),
    ],
)
def test_valid_enum_values(tmp_path: Path, cloud: str, produces: str, backend: str) -> None:
    outputs = "[queue_url]" if produces == "queue" else "[hostname, port]"
    root = write_tree(
        tmp_path,
        enclave_files(
            "e",
            f"cloud: {cloud}\n",
            p=f"produces: {produces}\nbackend: {backend}\ndeclared_outputs: {outputs}\n",
        ),
    )
    enclave = load_graph(root).enclaves["e"]
    part = enclave.partitions[0].config
    assert (enclave.config.cloud, part.produces, part.backend) == (cloud, produces, backend)


# -- export `to:` forms ----------------------------------------------------------------------


def export_tree(tmp_path: Path, to: str) -> Path:
    exports = f"exports:\n  - name: x\n    target_partition: p\n    type: http\n    to: {to}\n"
    return write_tree(tmp_path, enclave_files("e", exports, p=HTTP))


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("public", "public"),
        ("any_enclave", "any_enclave"),
        ("any-enclave", "any_enclave"),
        ("vpn", "vpn"),
        ("{enclave: other}", EnclaveTarget(enclave="other")),
        ("{partition: p}", PartitionTarget(partition="p")),
    ],
)
def test_export_target_forms(tmp_path: Path, to: str, expected: object) -> None:
    graph = load_graph(export_tree(tmp_path, to))
    assert graph.enclaves["e"].config.exports[0].to == expected


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("everyone", "unknown export target 'everyone': expected one of: public, any_enclave, vpn"),
        ("Public", "unknown export target 'Public'"),
        ("{cluster: x}", "expected one of: public, any_enclave, vpn, {enclave: <id>}"),
        ("{enclave: a, partition: b}", "expected one of: public, any_enclave"),
        ("{enclave: 'a b'}", "expected one of: public, any_enclave"),
        ("[public]", "expected one of: public, any_enclave"),
        ("enclave:other", "unknown export target 'enclave:other'"),
    ],
)
def test_invalid_export_targets(tmp_path: Path, to: str, message: str) -> None:
    issue = only_issue(export_tree(tmp_path, to))
    assert (issue.path, issue.line, issue.field) == ("e/config.yml", 8, "exports[0].to")
    assert message in issue.message


# -- inputs ------------------------------------------------------------------------------------


def test_input_scalars_keep_the_text_written(tmp_path: Path) -> None:
    text = PART + (
        "inputs:\n  port: 5432\n  flag: true\n  mode: 0755\n  price: 1.50\n  answer: yes\n"
        "  big: 1e3\n  quoted: '~'\n  hex: 0x1F\n  literal: |\n    two\n    lines\n"
    )
    inputs = load(one_partition_tree(tmp_path, text)).enclaves[0].partitions[0].config.inputs
    assert inputs == {
        "port": "5432",
        "flag": "true",
        "mode": "0755",
        "price": "1.50",
        "answer": "yes",
        "big": "1e3",
        "quoted": "~",
        "hex": "0x1F",
        "literal": "two\nlines\n",
    }


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("~", "nothing (null)"),
        ("", "nothing (null)"),
        ("[1, 2]", "a list"),
        ("{a: 1}", "a mapping"),
    ],
)
def test_input_must_be_a_scalar(tmp_path: Path, value: str, got: str) -> None:
    issue = only_issue(one_partition_tree(tmp_path, PART + f"inputs:\n  a: ok\n  b: {value}\n"))
    assert (issue.path, issue.line, issue.field) == ("e/p/config.yml", 5, "inputs.b")
    assert issue.message == f"expected text, got {got} (inputs take text, numbers or booleans)"


def test_input_name_must_be_a_terraform_name(tmp_path: Path) -> None:
    issue = only_issue(one_partition_tree(tmp_path, PART + "inputs:\n  9lives: x\n"))
    assert (issue.path, issue.field) == ("e/p/config.yml", "inputs.9lives")
    assert "'9lives' is not valid" in issue.message


# -- where documents may live ----------------------------------------------------------------


def test_partition_config_outside_any_enclave(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"stray/config.yml": PART + HTTP})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("stray/config.yml", 1, "")
    assert "looks like a partition config outside of any enclave directory" in issue.message


def test_enclave_config_nested_in_an_enclave(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            **enclave_files("outer", p=""),
            "outer/inner/config.yml": "id: inner\nname: I\nregion: r\n",
        },
    )
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("outer/inner/config.yml", 1, "")
    assert "enclaves do not nest" in issue.message


# -- bundles -----------------------------------------------------------------------------------


def bundle_of(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_bundle_loads_exactly_what_the_directory_holds(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(EXAMPLES / "product-a" / "enclaves", root)
    from_dir = load_directory(root, display_root="")
    from_bundle = load_bundle(bundle_of(root))
    assert len(from_dir.enclaves) == len(from_bundle.enclaves) == 2
    for a, b in zip(from_dir.enclaves, from_bundle.enclaves, strict=True):
        assert (a.id, a.path, a.dir, a.config) == (b.id, b.path, b.dir, b.config)
        assert enclave_hash(a) == enclave_hash(b)
        assert [partition_hash(p) for p in a.partitions] == [
            partition_hash(p) for p in b.partitions
        ]
        assert [(p.path, p.files) for p in a.partitions] == [
            (p.path, p.files) for p in b.partitions
        ]
    assert from_dir.files_read == from_bundle.files_read


def test_bundle_reports_the_same_issues_as_the_directory(tmp_path: Path) -> None:
    root = write_tree(tmp_path, enclave_files("e", "cloud: mars\n", p="produces: grpc\n"))
    with pytest.raises(SpecError) as from_dir:
        load_directory(root, display_root="")
    with pytest.raises(SpecError) as from_bundle:
        load_bundle(bundle_of(root))
    assert from_dir.value.issues == from_bundle.value.issues


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/config.yml", "bundle paths must be relative, '/'-separated and non-empty"),
        ("../outside/config.yml", "may not contain empty, '.' or '..' segments"),
        ("e/../../config.yml", "may not contain empty, '.' or '..' segments"),
        ("e/./config.yml", "may not contain empty, '.' or '..' segments"),
        ("e//config.yml", "may not contain empty, '.' or '..' segments"),
        ("e\\config.yml", "bundle paths must be relative, '/'-separated and non-empty"),
        ("", "bundle paths must be relative, '/'-separated and non-empty"),
        (".git/config.yml", "hidden files are not part of an enclaves tree"),
        ("e/p/.secret.tf", "hidden files are not part of an enclaves tree"),
        ("x" * 1025, "longer than 1024 characters"),
        ("C:/config.yml", "bundle paths must be relative"),
    ],
)
def test_bundle_refuses_bad_paths(path: str, message: str) -> None:
    files = {"e/config.yml": b"id: e\nname: E\nregion: r\n", path: b"x"}
    with pytest.raises(SpecError) as caught:
        load_bundle(files)
    (issue,) = caught.value.issues
    assert (issue.path, issue.line) == (path, None)
    assert message in issue.message


def test_bundle_display_root_prefixes_paths() -> None:
    with pytest.raises(SpecError) as caught:
        load_bundle({"e/config.yml": b""}, display_root="upload")
    assert caught.value.issues[0].path == "upload/e/config.yml"
