"""Graph validation: every cross-file rule, each with a valid and an invalid tree."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest

from nclav.config import load_directory
from nclav.graph import validate_graph
from nclav.model import AUTH_MATRIX, Auth, Cloud, ExportType
from support import HTTP, QUEUE, SEED, TCP, enclave_files, load_graph, only_issue, spec_issues
from support import write_tree as write

if TYPE_CHECKING:
    from pathlib import Path

PRODUCES = {"http": HTTP, "tcp": TCP, "queue": QUEUE}


def export(name: str, target: str, kind: str = "http", to: str = "public", auth: str = "") -> str:
    """One export list item: 4 lines (5 with auth)."""
    text = f"  - name: {name}\n    target_partition: {target}\n    type: {kind}\n    to: {to}\n"
    return text + (f"    auth: {auth}\n" if auth else "")


def imp(source: str, export_name: str, alias: str) -> str:
    """One import list item: 3 lines."""
    return f"  - from: {source}\n    export_name: {export_name}\n    alias: {alias}\n"


def exports(*items: str) -> str:
    return "exports:\n" + "".join(items)


def imports(*items: str) -> str:
    return "imports:\n" + "".join(items)


# `a` exports its http partition `api` as `api` (public); `b` imports it as `up`.
EXPORTER = enclave_files("a", exports(export("api", "api")), api=HTTP)


def importer(partition_text: str = "", extra: str = "", directory: str = "b") -> dict[str, str]:
    return enclave_files(directory, imports(imp("a", "api", "up")) + extra, w=partition_text)


# -- a valid tree ------------------------------------------------------------------------------


def test_valid_tree_wiring_and_upstream(tmp_path: Path) -> None:
    root = write(tmp_path, {**EXPORTER, **importer('inputs:\n  url: "{{ up.hostname }}"\n')})
    graph = load_graph(root)
    assert graph.order == ("a", "b")
    wiring = graph.aliases["b"]["up"]
    assert (wiring.exporter, wiring.partition, wiring.export.name, wiring.upstream) == (
        "a",
        None,
        "api",
        ("a", "api"),
    )
    assert graph.upstream[("b", "w")] == (("a", "api"),)
    assert graph.upstream[("a", "api")] == ()


def test_seed_fixture_is_valid_and_intra_enclave_import_adds_no_enclave_edge(
    tmp_path: Path,
) -> None:
    graph = load_graph(write(tmp_path, SEED))
    assert graph.order == ("product-a-dev",)
    assert graph.upstream[("product-a-dev", "api")] == (("product-a-dev", "db"),)
    assert [p.id for p in graph.partition_order("product-a-dev")] == ["db", "api"]


# -- duplicates --------------------------------------------------------------------------------


def test_duplicate_enclave_id(tmp_path: Path) -> None:
    root = write(tmp_path, {**enclave_files("a"), **enclave_files("b", enclave_id="a")})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/config.yml", 1, "id")
    assert issue.message == "duplicate enclave id 'a' (first declared in a/config.yml)"


def test_duplicate_partition_id(tmp_path: Path) -> None:
    files = enclave_files("a", p1="", p2="")
    files["a/p2/config.yml"] = "id: p1\nname: second\n"
    issue = only_issue(write(tmp_path, files))
    assert (issue.path, issue.line, issue.field) == ("a/p2/config.yml", 1, "id")
    assert "duplicate partition id 'p1' in enclave 'a' (also a/p1/config.yml)" in issue.message


def test_same_partition_id_in_two_enclaves_is_fine(tmp_path: Path) -> None:
    graph = load_graph(write(tmp_path, {**enclave_files("a", p=""), **enclave_files("b", p="")}))
    assert [p.id for e in graph.enclaves.values() for p in e.partitions] == ["p", "p"]


def test_duplicate_export_name(tmp_path: Path) -> None:
    text = exports(export("x", "api"), export("x", "api", to="vpn"))
    issue = only_issue(write(tmp_path, enclave_files("a", text, api=HTTP)))
    assert (issue.path, issue.line, issue.field) == ("a/config.yml", 9, "exports[1].name")
    assert issue.message == "duplicate export name 'x'"


def test_duplicate_alias_between_enclave_and_partition_imports(tmp_path: Path) -> None:
    root = write(tmp_path, {**EXPORTER, **importer(imports(imp("a", "api", "up")))})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/w/config.yml", 6, "imports[0].alias")
    assert issue.message == (
        "duplicate import alias 'up' in enclave 'b' "
        "(enclave and partition imports share one namespace)"
    )


def test_distinct_aliases_for_the_same_export_are_fine(tmp_path: Path) -> None:
    root = write(tmp_path, {**EXPORTER, **importer(imports(imp("a", "api", "up2")))})
    graph = load_graph(root)
    assert sorted(graph.aliases["b"]) == ["up", "up2"]
    assert graph.aliases["b"]["up2"].partition == "w"


# -- exports ----------------------------------------------------------------------------------


def test_export_target_partition_must_exist(tmp_path: Path) -> None:
    root = write(tmp_path, enclave_files("a", exports(export("x", "nope")), api=HTTP))
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == (
        "a/config.yml",
        6,
        "exports[0].target_partition",
    )
    assert issue.message == "export 'x' targets unknown partition 'nope' (partitions: api)"


def test_export_type_must_match_produces(tmp_path: Path) -> None:
    root = write(tmp_path, enclave_files("a", exports(export("x", "api", "tcp")), api=HTTP))
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("a/config.yml", 7, "exports[0].type")
    assert issue.message == "export 'x' has type tcp but its target partition 'api' produces http"


def test_export_target_without_produces(tmp_path: Path) -> None:
    root = write(tmp_path, enclave_files("a", exports(export("x", "api")), api=""))
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("a/config.yml", 7, "exports[0].type")
    assert "target partition 'api' declares no produces" in issue.message


@pytest.mark.parametrize(
    ("partition", "line", "field", "missing"),
    [
        ("produces: http\ndeclared_outputs: [hostname]\n", 4, "declared_outputs", "port"),
        ("produces: tcp\ndeclared_outputs: [port, url]\n", 4, "declared_outputs", "hostname"),
        ("produces: tcp\n", 3, "produces", "hostname, port"),
        ("produces: queue\ndeclared_outputs: [url]\n", 4, "declared_outputs", "queue_url"),
    ],
)
def test_required_declared_outputs(
    tmp_path: Path, partition: str, line: int, field: str, missing: str
) -> None:
    issue = only_issue(write(tmp_path, enclave_files("a", p=partition)))
    assert (issue.path, issue.line, issue.field) == ("a/p/config.yml", line, field)
    assert issue.message.endswith(
        f"must declare outputs {_required(partition)}; missing: {missing}"
    )


def _required(partition: str) -> str:
    return "queue_url" if "queue" in partition else "hostname, port"


@pytest.mark.parametrize("kind", ["http", "tcp", "queue"])
def test_required_declared_outputs_present(tmp_path: Path, kind: str) -> None:
    text = PRODUCES[kind].replace("]", ", extra]")
    graph = load_graph(write(tmp_path, enclave_files("a", p=text)))
    assert graph.enclaves["a"].partitions[0].config.produces == kind


def test_duplicate_declared_output(tmp_path: Path) -> None:
    root = write(tmp_path, enclave_files("a", p="declared_outputs:\n  - x\n  - x\n"))
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("a/p/config.yml", 5, "declared_outputs[1]")
    assert issue.message == "duplicate declared output 'x'"


ACCEPTED = {
    ("http", "none"),
    ("http", "token"),
    ("http", "oauth"),
    ("http", "mtls"),
    ("tcp", "none"),
    ("tcp", "mtls"),
    ("tcp", "native"),
    ("queue", "none"),
    ("queue", "token"),
    ("queue", "native"),
}


def test_auth_matrix_constant_matches_the_readme() -> None:
    table = {(t.value, a.value) for t, auths in AUTH_MATRIX.items() for a in auths}
    assert table == ACCEPTED


@pytest.mark.parametrize(
    ("kind", "auth"), list(itertools.product(["http", "tcp", "queue"], [a.value for a in Auth]))
)
def test_auth_type_matrix(tmp_path: Path, kind: str, auth: str) -> None:
    text = exports(export("x", "p", kind, auth=auth))
    root = write(tmp_path, enclave_files("a", text, p=PRODUCES[kind]))
    if (kind, auth) in ACCEPTED:
        assert load_graph(root).enclaves["a"].config.exports[0].auth == auth
        return
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("a/config.yml", 9, "exports[0].auth")
    assert issue.message.startswith(
        f"incompatible auth: export 'x' has type {kind} but auth {auth}; {kind} exports take: "
    )
    allowed = sorted(a.value for a in AUTH_MATRIX[ExportType(kind)])
    assert issue.message.endswith(", ".join(allowed))


def test_auth_defaults_to_none(tmp_path: Path) -> None:
    graph = load_graph(write(tmp_path, EXPORTER))
    assert graph.enclaves["a"].config.exports[0].auth == Auth.NONE


# -- imports ----------------------------------------------------------------------------------


def test_import_from_unknown_enclave(tmp_path: Path) -> None:
    root = write(tmp_path, {**EXPORTER, **enclave_files("b", imports(imp("ghost", "api", "up")))})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/config.yml", 5, "imports[0].from")
    assert issue.message == "imports from unknown enclave 'ghost'"


def test_import_of_unknown_export(tmp_path: Path) -> None:
    root = write(tmp_path, {**EXPORTER, **enclave_files("b", imports(imp("a", "db", "up")))})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/config.yml", 6, "imports[0].export_name")
    assert issue.message == "enclave 'a' has no export 'db' (its exports: api)"


def test_partition_level_import_is_checked_too(tmp_path: Path) -> None:
    root = write(tmp_path, {**EXPORTER, **enclave_files("b", w=imports(imp("a", "db", "up")))})
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/w/config.yml", 5, "imports[0].export_name")
    assert "has no export 'db'" in issue.message


@pytest.mark.parametrize(
    ("to", "admitted"),
    [
        ("public", True),
        ("any_enclave", True),
        ("any-enclave", True),
        ("vpn", True),
        ("{enclave: b}", True),
        ("{enclave: c}", False),
        ("{partition: w}", False),
        ("{partition: api}", False),
    ],
)
def test_access_control(tmp_path: Path, to: str, admitted: bool) -> None:
    exporter = enclave_files("a", exports(export("api", "api", to=to)), api=HTTP)
    root = write(tmp_path, {**exporter, **importer(), **enclave_files("c")})
    if admitted:
        assert "up" in load_graph(root).aliases["b"]
        return
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/config.yml", 5, "imports[0]")
    target = to.replace("{", "").replace("}", "")
    assert issue.message == (
        f"access denied: export 'api' of 'a' does not admit enclave 'b' (to: {{{target}}})"
    )


def test_enclave_target_admits_only_that_enclave(tmp_path: Path) -> None:
    exporter = enclave_files("a", exports(export("api", "api", to="{enclave: b}")), api=HTTP)
    root = write(tmp_path, {**exporter, **importer(), **importer(directory="c")})
    issue = only_issue(root)
    assert (issue.path, issue.field) == ("c/config.yml", "imports[0]")
    assert "does not admit enclave 'c'" in issue.message


def test_a_failed_import_is_reported_once_not_again_at_its_tokens(tmp_path: Path) -> None:
    exporter = enclave_files("a", exports(export("api", "api", to="{enclave: c}")), api=HTTP)
    root = write(tmp_path, {**exporter, **importer('inputs:\n  url: "{{ up.hostname }}"\n')})
    issue = only_issue(root)
    assert (issue.path, issue.field) == ("b/config.yml", "imports[0]")
    assert issue.message.startswith("access denied")


# -- cycles -----------------------------------------------------------------------------------


def _cycle_of(message: str, prefix: str) -> list[str]:
    assert message.startswith(prefix)
    chain = message[len(prefix) :].split(" -> ")
    assert chain[0] == chain[-1]
    return chain


def test_enclave_cycle_is_named(tmp_path: Path) -> None:
    files: dict[str, str] = {}
    for me, source in (("a", "c"), ("b", "a"), ("c", "b")):  # a reads c, b reads a, c reads b
        text = exports(export(me, "api")) + imports(imp(source, source, "up"))
        files.update(enclave_files(me, text, api=HTTP))
    issue = only_issue(write(tmp_path, files))
    assert issue.field == "imports"
    chain = _cycle_of(issue.message, "enclave dependency cycle: ")
    assert sorted(chain[:-1]) == ["a", "b", "c"]
    reads = {("a", "c"), ("b", "a"), ("c", "b")}
    pairs = set(itertools.pairwise(chain))
    assert pairs == reads or pairs == {(y, x) for x, y in reads}
    assert issue.path == f"{chain[0]}/config.yml" or issue.path == f"{chain[-2]}/config.yml"


def test_partition_cycle_inside_one_enclave_is_named(tmp_path: Path) -> None:
    text = exports(export("one", "p1", to="{enclave: a}"), export("two", "p2", to="{enclave: a}"))
    p1 = HTTP + imports(imp("a", "two", "second")) + 'inputs:\n  x: "{{ second.port }}"\n'
    p2 = HTTP + imports(imp("a", "one", "first"))
    issue = only_issue(write(tmp_path, enclave_files("a", text, p1=p1, p2=p2)))
    chain = _cycle_of(issue.message, "partition dependency cycle: ")
    assert sorted(chain[:-1]) == ["a/p1", "a/p2"]
    assert issue.path in ("a/p1/config.yml", "a/p2/config.yml")


def test_partition_chain_without_cycle_is_ordered(tmp_path: Path) -> None:
    text = exports(export("one", "p1", to="{enclave: a}"), export("two", "p2", to="{enclave: a}"))
    p1 = HTTP + imports(imp("a", "two", "second"))
    graph = load_graph(write(tmp_path, enclave_files("a", text, p0="", p1=p1, p2=HTTP)))
    assert [p.id for p in graph.partition_order("a")] == ["p0", "p2", "p1"]


def test_enclave_order_exporters_first_ties_by_load_order(tmp_path: Path) -> None:
    reads = {"a": "c", "b": None, "c": None, "d": "a", "e": "d"}  # enclave -> enclave it reads
    files: dict[str, str] = {}
    for me, source in reads.items():
        text = exports(export(me, "api")) + (imports(imp(source, source, "up")) if source else "")
        files.update(enclave_files(me, text, api=HTTP))
    graph = load_graph(write(tmp_path, files))
    assert graph.order == ("b", "c", "a", "d", "e")


# -- template tokens --------------------------------------------------------------------------


def token_tree(tmp_path: Path, value: str, cloud: str = "") -> Path:
    extra = f"cloud: {cloud}\n" if cloud else ""
    return write(tmp_path, {**EXPORTER, **importer(f'inputs:\n  v: "{value}"\n', extra)})


def test_context_and_alias_tokens_are_valid(tmp_path: Path) -> None:
    value = (
        "{{ nclav_enclave_id }}/{{nclav_partition_id}}/{{ nclav_project_id }}/"
        "{{ nclav_region }}/{{ up.hostname }}:{{ up.port }}"
    )
    graph = load_graph(token_tree(tmp_path, value))
    assert graph.upstream[("b", "w")] == (("a", "api"),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "{{ nclav_zone }}",
            "unknown token '{{ nclav_zone }}': expected one of nclav_enclave_id, "
            "nclav_partition_id, nclav_project_id, nclav_region, or <import alias>.<output>",
        ),
        (
            "{{ ghost.hostname }}",
            "token '{{ ghost.hostname }}' names unknown import alias 'ghost' (aliases: up)",
        ),
        (
            "{{ up.password }}",
            "token '{{ up.password }}': partition a/api declares no output 'password' "
            "(declared: hostname, port)",
        ),
        ("x {{ nclav_region", "'{{' at offset 2 is never closed with '}}'"),
        ("{{ }}", "empty token '{{ }}'"),
        ("{{ up. }}", "malformed token '{{ up. }}'"),
    ],
)
def test_invalid_tokens(tmp_path: Path, value: str, message: str) -> None:
    issue = only_issue(token_tree(tmp_path, value, "local"))
    assert (issue.path, issue.line, issue.field) == ("b/w/config.yml", 4, "inputs.v")
    assert message in issue.message


@pytest.mark.parametrize(
    ("cloud", "token", "valid"),
    [
        ("aws", "nclav_account_id", True),
        ("aws", "nclav_role_arn", True),
        ("aws", "nclav_enclave", True),
        ("azure", "nclav_subscription_id", True),
        ("azure", "nclav_resource_group", True),
        ("azure", "nclav_identity_client_id", True),
        ("local", "nclav_account_id", False),
        ("gcp", "nclav_subscription_id", False),
        ("aws", "nclav_resource_group", False),
        ("azure", "nclav_role_arn", False),
    ],
)
def test_cloud_specific_tokens(tmp_path: Path, cloud: str, token: str, valid: bool) -> None:
    root = token_tree(tmp_path, f"{{{{ {token} }}}}", cloud)
    if valid:
        load_graph(root)
        return
    issue = only_issue(root)
    assert (issue.path, issue.field) == ("b/w/config.yml", "inputs.v")
    assert f"unknown token '{{{{ {token} }}}}'" in issue.message


def test_default_cloud_decides_the_tokens_of_an_enclave_without_cloud(tmp_path: Path) -> None:
    desired = load_directory(token_tree(tmp_path, "{{ nclav_account_id }}"), display_root="")
    validate_graph(desired)  # no cloud known: any driver's token may be meant
    validate_graph(desired, Cloud.AWS)
    with pytest.raises(Exception, match="unknown token") as caught:
        validate_graph(desired, Cloud.LOCAL)
    assert caught.value.issues[0].field == "inputs.v"  # type: ignore[attr-defined]


def test_reserved_input_names(tmp_path: Path) -> None:
    root = write(tmp_path, enclave_files("a", p="inputs:\n  ok: x\n  nclav_partition: y\n"))
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("a/p/config.yml", 5, "inputs.nclav_partition")
    assert issue.message == "'nclav_partition' is reserved: nclav always sets it"


def test_reserved_enclave_input_name(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, enclave_files("a", p="inputs:\n  nclav_enclave: y\n")))
    assert (issue.field, issue.line) == ("inputs.nclav_enclave", 4)


def test_nclav_prefixed_input_names_other_than_reserved_are_fine(tmp_path: Path) -> None:
    graph = load_graph(write(tmp_path, enclave_files("a", p="inputs:\n  nclav_extra: y\n")))
    assert graph.enclaves["a"].partitions[0].config.inputs == {"nclav_extra": "y"}


# -- terraform files and source ---------------------------------------------------------------


def test_source_and_tf_files_are_exclusive(tmp_path: Path) -> None:
    root = write(tmp_path, enclave_files("a", p="terraform:\n  source: git::https://x/y.git\n"))
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("a/p/config.yml", 4, "terraform.source")
    assert (
        "terraform.source and .tf files in the partition directory are exclusive" in issue.message
    )


def test_source_without_tf_files_is_valid(tmp_path: Path) -> None:
    files = enclave_files("a", p="terraform:\n  source: git::https://x/y.git\n")
    del files["a/p/main.tf"]
    graph = load_graph(write(tmp_path, {**files, "a/p/README.md": "docs"}))
    assert graph.enclaves["a"].partitions[0].config.terraform.source == "git::https://x/y.git"


def test_neither_tf_files_nor_source(tmp_path: Path) -> None:
    files = enclave_files("a", p="")
    del files["a/p/main.tf"]
    issue = only_issue(write(tmp_path, {**files, "a/p/modules/main.tf": ""}))
    assert (issue.path, issue.line, issue.field) == ("a/p/config.yml", 1, "id")
    assert issue.message == "partition has no .tf files in a/p/ and no terraform.source"


def test_tf_json_counts_as_terraform(tmp_path: Path) -> None:
    files = enclave_files("a", p="")
    del files["a/p/main.tf"]
    load_graph(write(tmp_path, {**files, "a/p/main.tf.json": "{}"}))


# -- network ----------------------------------------------------------------------------------


def network(vpc: str, *subnets: str) -> str:
    return f"network:\n  vpc_cidr: {vpc}\n  subnets: [{', '.join(subnets)}]\n"


def test_valid_network(tmp_path: Path) -> None:
    text = network("10.0.0.0/16", "10.0.1.0/24", "10.0.2.0/24")
    graph = load_graph(write(tmp_path, enclave_files("a", text)))
    assert graph.enclaves["a"].config.network.subnets == ("10.0.1.0/24", "10.0.2.0/24")


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (network("10.0.0.0/33"), 5, "network.vpc_cidr", "invalid CIDR '10.0.0.0/33'"),
        (network("banana"), 5, "network.vpc_cidr", "invalid CIDR 'banana'"),
        (network("10.0.0.1/16"), 5, "network.vpc_cidr", "(did you mean 10.0.0.0/16?)"),
        (
            network("10.0.0.0/16", "10.0.1.1/24"),
            6,
            "network.subnets[0]",
            "(did you mean 10.0.1.0/24?)",
        ),
        (
            network("10.0.0.0/16", "10.1.0.0/24"),
            6,
            "network.subnets[0]",
            "subnet 10.1.0.0/24 is not inside vpc_cidr 10.0.0.0/16",
        ),
        (network("10.0.0.0/16", "10.0.0.0/8"), 6, "network.subnets[0]", "is not inside vpc_cidr"),
        (network("10.0.0.0/16", "fd00::/64"), 6, "network.subnets[0]", "is not inside vpc_cidr"),
        (
            network("10.0.0.0/16", "10.0.0.0/24", "10.0.0.128/25"),
            6,
            "network.subnets[1]",
            "subnet 10.0.0.128/25 overlaps subnets[0] 10.0.0.0/24",
        ),
    ],
)
def test_invalid_network(tmp_path: Path, text: str, line: int, field: str, message: str) -> None:
    issue = only_issue(write(tmp_path, enclave_files("a", text)))
    assert (issue.path, issue.line, issue.field) == ("a/config.yml", line, field)
    assert message in issue.message


def test_overlapping_vpcs_on_the_same_cloud(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **enclave_files("a", "cloud: gcp\n" + network("10.0.0.0/16")),
            **enclave_files("b", "cloud: gcp\n" + network("10.0.128.0/17")),
        },
    )
    issue = only_issue(root)
    assert (issue.path, issue.line, issue.field) == ("b/config.yml", 6, "network.vpc_cidr")
    assert issue.message == (
        "vpc_cidr 10.0.128.0/17 overlaps 10.0.0.0/16 of enclave 'a' (both on cloud gcp)"
    )


def test_overlapping_vpcs_on_different_clouds_are_fine(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **enclave_files("a", "cloud: gcp\n" + network("10.0.0.0/16")),
            **enclave_files("b", "cloud: aws\n" + network("10.0.0.0/16")),
            **enclave_files("c", "cloud: aws\n" + network("10.1.0.0/16")),
        },
    )
    assert len(load_graph(root).enclaves) == 3


def test_default_cloud_groups_enclaves_without_cloud(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **enclave_files("a", "cloud: aws\n" + network("10.0.0.0/16")),
            **enclave_files("b", network("10.0.0.0/16")),
        },
    )
    desired = load_directory(root, display_root="")
    validate_graph(desired, Cloud.GCP)
    with pytest.raises(Exception, match="overlaps 10.0.0.0/16 of enclave 'a'"):
        validate_graph(desired, Cloud.AWS)


# -- everything at once -----------------------------------------------------------------------


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **enclave_files("a", exports(export("x", "api", auth="native")), api=HTTP),
            **enclave_files(
                "b", imports(imp("ghost", "x", "up")), w='inputs:\n  v: "{{ nope }}"\n'
            ),
        },
    )
    issues = spec_issues(root)
    assert [(i.path, i.line, i.field) for i in issues] == [
        ("a/config.yml", 9, "exports[0].auth"),
        ("b/config.yml", 5, "imports[0].from"),
        ("b/w/config.yml", 4, "inputs.v"),
    ]
    assert [i.message.split(":")[0] for i in issues] == [
        "incompatible auth",
        "imports from unknown enclave 'ghost'",
        "unknown token '{{ nope }}'",
    ]
