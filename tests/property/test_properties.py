"""Property tests: any input gives a result or a SpecError; planning is stable and ordered."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nclav.config import load_bundle, load_directory
from nclav.errors import SpecError
from nclav.graph import Graph, validate_graph
from nclav.hashing import enclave_hash, partition_hash
from nclav.model import AUTH_MATRIX, REQUIRED_OUTPUTS, ExportType
from nclav.plan import Action, ChangeKind, Plan, plan_changes
from nclav.transitions import simulate_apply
from support import write_tree

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ENCLAVE = b"id: e\nname: E\nregion: r\n"
PARTITION = b"id: p\nname: P\n"


def load_and_validate(files: dict[str, bytes], on_disk: bool) -> Graph | None:
    """Load (from a directory or a bundle) and validate; only SpecError may come out."""
    try:
        if on_disk:
            with tempfile.TemporaryDirectory() as tmp:
                return validate_graph(load_directory(write_tree(Path(tmp), files)))
        return validate_graph(load_bundle(files))
    except SpecError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert isinstance(issue.message, str) and issue.message
            assert issue.line is None or issue.line >= 1
        return None


# -- (1) arbitrary text and bytes ---------------------------------------------------------------

CONTENT = st.one_of(st.text(max_size=300).map(str.encode), st.binary(max_size=300))


@FAST
@given(content=CONTENT, as_partition=st.booleans(), on_disk=st.booleans())
def test_arbitrary_config_content_gives_a_graph_or_a_spec_error(
    content: bytes, as_partition: bool, on_disk: bool
) -> None:
    files = {"e/config.yml": ENCLAVE, "e/p/config.yml": PARTITION, "e/p/main.tf": b""}
    files["e/p/config.yml" if as_partition else "e/config.yml"] = content
    load_and_validate(files, on_disk)


# -- (2) plausible YAML documents: valid and invalid values mixed -----------------------------

IDS = st.sampled_from(["e", "f", "p", "q", "api", "db", "a b", "", "x/y", "-bad"])
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    IDS,
)
ANY = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3)), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, ANY)


TOKEN_TEXT = st.sampled_from(
    [
        "{{ nclav_enclave_id }}",
        "{{ nclav_region }}",
        "{{ up.hostname }}",
        "{{ up.nope }}",
        "{{ ghost.port }}",
        "{{ nclav_account_id }}",
        "{{ unclosed",
        "{{ }}",
        "plain",
        "5432",
    ]
)
TARGET = st.one_of(
    st.sampled_from(["public", "any_enclave", "any-enclave", "vpn", "nobody"]),
    st.fixed_dictionaries({"enclave": IDS}),
    st.fixed_dictionaries({"partition": IDS}),
)
IMPORT = st.fixed_dictionaries(
    {
        "from": maybe(IDS),
        "export_name": maybe(st.sampled_from(["x", "y"])),
        "alias": maybe(st.sampled_from(["up", "down", "bad.alias"])),
    },
    optional={"extra": ANY},
)
EXPORT = st.fixed_dictionaries(
    {
        "name": maybe(st.sampled_from(["x", "y"])),
        "target_partition": maybe(IDS),
        "type": maybe(st.sampled_from(["http", "tcp", "queue", "grpc"])),
        "to": maybe(TARGET),
    },
    optional={
        "auth": maybe(st.sampled_from(["none", "token", "oauth", "mtls", "native", "x"])),
        "port": maybe(st.integers(-1, 70000)),
        "hostname": maybe(st.text(max_size=8)),
        "target_partiton": ANY,
    },
)
CIDR = st.sampled_from(["10.0.0.0/16", "10.0.1.0/24", "10.0.0.1/16", "10.0.0.0/33", "::/0", "x"])
ENCLAVE_DOC = st.fixed_dictionaries(
    {"id": maybe(IDS), "name": maybe(st.text(max_size=8)), "region": maybe(st.text(max_size=5))},
    optional={
        "cloud": maybe(st.sampled_from(["local", "gcp", "aws", "azure", "mars"])),
        "identity": maybe(st.text(max_size=5)),
        "network": maybe(
            st.fixed_dictionaries(
                {}, optional={"vpc_cidr": maybe(CIDR), "subnets": maybe(st.lists(CIDR, max_size=3))}
            )
        ),
        "dns": maybe(st.fixed_dictionaries({}, optional={"zone": maybe(st.text(max_size=5))})),
        "imports": maybe(st.lists(IMPORT, max_size=2)),
        "exports": maybe(st.lists(EXPORT, max_size=2)),
        "partitions": maybe(st.lists(st.sampled_from(["p", "q", "missing", ".."]), max_size=2)),
        "regoin": ANY,
    },
)
PARTITION_DOC = st.fixed_dictionaries(
    {"id": maybe(st.sampled_from(["p", "q"])), "name": maybe(st.text(max_size=8))},
    optional={
        "produces": maybe(st.sampled_from(["http", "tcp", "queue", "udp"])),
        "backend": maybe(st.sampled_from(["terraform", "opentofu", "managed", "pulumi"])),
        "terraform": maybe(
            st.fixed_dictionaries(
                {},
                optional={"source": maybe(st.text(max_size=5)), "tool": maybe(st.text(max_size=5))},
            )
        ),
        "imports": maybe(st.lists(IMPORT, max_size=2)),
        "exports": maybe(st.lists(EXPORT, max_size=1)),
        "inputs": maybe(
            st.dictionaries(
                st.sampled_from(["a", "b", "nclav_enclave", "9x"]),
                maybe(TOKEN_TEXT | SCALAR),
                max_size=3,
            )
        ),
        "declared_outputs": maybe(
            st.lists(st.sampled_from(["hostname", "port", "queue_url", "x"]), max_size=4)
        ),
        "region": ANY,
    },
)


def dump(doc: object, flow: bool | None) -> bytes:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True).encode()


@FAST
@given(
    enclave=ENCLAVE_DOC,
    partitions=st.lists(PARTITION_DOC, min_size=0, max_size=2),
    second=st.one_of(st.none(), ENCLAVE_DOC),
    flow=st.sampled_from([None, True, False]),
    tf=st.booleans(),
)
def test_plausible_documents_give_a_graph_or_a_spec_error(
    enclave: dict[str, Any],
    partitions: list[dict[str, Any]],
    second: dict[str, Any] | None,
    flow: bool | None,
    tf: bool,
) -> None:
    files = {"e/config.yml": dump(enclave, flow)}
    for name, doc in zip(("p", "q"), partitions, strict=False):
        files[f"e/{name}/config.yml"] = dump(doc, flow)
        if tf:
            files[f"e/{name}/main.tf"] = b""
    if second is not None:
        files["f/config.yml"] = dump(second, flow)
    graph = load_and_validate(files, on_disk=False)
    if graph is not None:  # whatever validated must also plan and apply cleanly
        applied = simulate_apply(graph, {})
        assert plan_changes(graph, applied).changes == ()


# -- (3) random valid trees: fresh plans are ordered, re-plans are empty ----------------------


def admits(to: Any, enclave_id: str) -> bool:
    return not isinstance(to, dict) or to.get("enclave") == enclave_id


@st.composite
def valid_trees(draw: st.DrawFn) -> dict[str, bytes]:
    """1-5 enclaves of 1-4 partitions with exports and imports that respect every rule."""
    files: dict[str, bytes] = {}
    # exports of the enclaves built so far: (enclave, export name, `to`, target's outputs)
    published: list[tuple[str, str, Any, list[str]]] = []
    n_enclaves = draw(st.integers(1, 5))
    for e in range(n_enclaves):
        eid = f"e{e}"
        enclave: dict[str, Any] = {"id": eid, "name": f"Enclave {e}", "region": "r"}
        if draw(st.booleans()):
            enclave["cloud"] = draw(st.sampled_from(["local", "gcp", "aws", "azure"]))
        if draw(st.booleans()):
            enclave["network"] = {
                "vpc_cidr": f"10.{e}.0.0/16",
                "subnets": [f"10.{e}.{k}.0/24" for k in range(draw(st.integers(0, 2)))],
            }
        exports: list[dict[str, Any]] = []
        enclave_imports: list[dict[str, Any]] = []
        aliases: dict[str, tuple[list[str], int | None]] = {}  # alias -> (outputs, intra target)
        n_parts = draw(st.integers(1, 4))
        names = [f"p{j}" for j in range(n_parts)]
        if draw(st.booleans()):
            names = draw(st.permutations(names))
            enclave["partitions"] = list(names)
        local_exports: list[tuple[str, int, list[str], Any]] = []
        for j, pid in enumerate(names):
            part: dict[str, Any] = {"id": pid, "name": pid.upper()}
            imports: list[dict[str, Any]] = []

            # cross-enclave imports come from earlier enclaves only (no enclave cycles), and
            # intra-enclave ones from exports of earlier partitions (no partition cycles)
            wanted = [
                (source, name, outputs, None)
                for source, name, to, outputs in published
                if admits(to, eid) and draw(st.integers(0, 3)) == 0
            ] + [
                (eid, name, outputs, target)
                for name, target, outputs, to in local_exports
                if admits(to, eid) and draw(st.integers(0, 2)) == 0
            ]
            for source, name, outputs, intra in wanted:
                alias = f"a{len(aliases)}"
                aliases[alias] = (outputs, intra)
                site = imports if draw(st.booleans()) else enclave_imports
                site.append({"from": source, "export_name": name, "alias": alias})
            if imports:
                part["imports"] = imports
            produces = draw(st.sampled_from([None, "http", "tcp", "queue"]))
            outputs = ["extra"] if draw(st.booleans()) else []
            if produces:
                part["produces"] = produces
                outputs += list(REQUIRED_OUTPUTS[ExportType(produces)])
            if outputs:
                part["declared_outputs"] = outputs
            inputs: dict[str, Any] = {"plain": draw(st.sampled_from(["x", 5432, True, "0755"]))}
            if draw(st.booleans()):
                inputs["ctx"] = "{{ nclav_enclave_id }}-{{ nclav_partition_id }}/{{ nclav_region }}"
            for alias, (outs, intra) in aliases.items():
                usable = intra is None or intra < j
                if usable and outs and draw(st.booleans()):
                    inputs[f"in_{alias}"] = f"pre {{{{ {alias}.{draw(st.sampled_from(outs))} }}}}"
            part["inputs"] = inputs
            files[f"{eid}/{pid}/config.yml"] = dump(part, draw(st.sampled_from([None, False])))
            files[f"{eid}/{pid}/main.tf"] = f"# {eid}/{pid}\n".encode()
            if produces and draw(st.booleans()):
                name = f"x{j}"
                to = draw(
                    st.sampled_from(
                        [
                            "public",
                            "any_enclave",
                            "vpn",
                            {"enclave": eid},
                            {"enclave": f"e{draw(st.integers(0, n_enclaves))}"},
                        ]
                    )
                )
                auth = draw(st.sampled_from(sorted(AUTH_MATRIX[ExportType(produces)])))
                exports.append(
                    {
                        "name": name,
                        "target_partition": pid,
                        "type": produces,
                        "to": to,
                        "auth": auth.value,
                    }
                )
                local_exports.append((name, j, outputs, to))
        if exports:
            enclave["exports"] = exports
            published.extend(
                (eid, x["name"], x["to"], outs)
                for x, (_, _, outs, _) in zip(exports, local_exports, strict=True)
            )
        if enclave_imports:
            enclave["imports"] = enclave_imports
        files[f"{eid}/config.yml"] = dump(enclave, draw(st.sampled_from([None, False])))
    return files


def assert_ordered(graph: Graph, plan: Plan) -> None:
    position = {s.id: i for i, s in enumerate(plan.steps)}
    assert len(position) == len(plan.steps)
    for i, step in enumerate(plan.steps):
        assert all(position[d] < i for d in step.depends_on), step
    for (eid, pid), ups in graph.upstream.items():
        for up in ups:  # an exporter's partition is provisioned before the partitions reading it
            assert (
                position[f"provision_partition:{up[0]}/{up[1]}"]
                < position[f"provision_partition:{eid}/{pid}"]
            )


@SLOW
@given(files=valid_trees(), on_disk=st.booleans())
def test_plan_of_a_fresh_tree_is_ordered_and_applying_it_leaves_nothing_to_do(
    files: dict[str, bytes], on_disk: bool
) -> None:
    graph = load_and_validate(files, on_disk)
    assert graph is not None, "the generator only builds valid trees"
    plan = plan_changes(graph, {})
    assert_ordered(graph, plan)
    kinds = [c.kind for c in plan.changes]
    n_partitions = sum(len(e.partitions) for e in graph.enclaves.values())
    n_exports = sum(len(e.config.exports) for e in graph.enclaves.values())
    n_imports = sum(len(a) for a in graph.aliases.values())
    assert kinds.count(ChangeKind.ENCLAVE_CREATED) == len(graph.enclaves)
    assert kinds.count(ChangeKind.PARTITION_CREATED) == n_partitions
    assert kinds.count(ChangeKind.EXPORT_WIRED) == n_exports
    assert kinds.count(ChangeKind.IMPORT_WIRED) == n_imports
    assert len(plan.changes) == len(graph.enclaves) + n_partitions + n_exports + n_imports
    assert not any(s.conditional for s in plan.steps)
    applied = simulate_apply(graph, {}, plan=plan)
    again = plan_changes(graph, applied)
    assert (again.changes, again.steps) == ((), ())
    assert again.render_text() == "No changes detected."


@SLOW
@given(files=valid_trees())
def test_tearing_down_a_whole_tree_is_ordered_and_complete(files: dict[str, bytes]) -> None:
    graph = validate_graph(load_bundle(files))
    applied = simulate_apply(graph, {})
    plan = plan_changes(validate_graph(load_bundle({})), applied)
    position = {s.id: i for i, s in enumerate(plan.steps)}
    for i, step in enumerate(plan.steps):
        assert all(position[d] < i for d in step.depends_on), step
    for eid, aliases in graph.aliases.items():
        for wiring in aliases.values():  # importers go before the enclaves they import from
            if wiring.exporter != eid:
                assert position[f"teardown_enclave:{eid}"] < min(
                    i
                    for sid, i in position.items()
                    if sid.startswith(f"teardown_partition:{wiring.exporter}/")
                )
    assert [s.action for s in plan.steps].count(Action.TEARDOWN_ENCLAVE) == len(graph.enclaves)
    assert simulate_apply(validate_graph(load_bundle({})), applied, plan=plan) == {}


# -- (4) hashing does not depend on YAML formatting -------------------------------------------


def restyle(doc: Any, order: st.DrawFn) -> Any:
    """The same document with its keys in another order and scalars written another way."""
    if isinstance(doc, dict):
        keys = order(st.permutations(list(doc)))
        return {k: restyle(doc[k], order) for k in keys}
    if isinstance(doc, list):
        return [restyle(v, order) for v in doc]
    if isinstance(doc, str) and doc.isdigit() and not doc.startswith("0"):
        return int(doc)  # written unquoted: the text stays the same
    if doc in ("true", "false") and order(st.booleans()):
        return doc == "true"
    return doc


@SLOW
@given(files=valid_trees(), data=st.data())
def test_hashes_do_not_depend_on_yaml_formatting(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    styled: dict[str, bytes] = {}
    for path, content in files.items():
        if path.endswith("config.yml"):
            doc = restyle(yaml.safe_load(content), data.draw)
            flow = data.draw(st.sampled_from([None, True, False]))
            width = data.draw(st.sampled_from([20, 80, 1000]))
            text = yaml.safe_dump(doc, default_flow_style=flow, sort_keys=False, width=width)
            styled[path] = ("# restyled\n" + text).encode()
        else:
            styled[path] = content
    first = validate_graph(load_bundle(files))
    second = validate_graph(load_bundle(styled))
    for eid, enclave in first.enclaves.items():
        other = second.enclaves[eid]
        assert enclave_hash(enclave) == enclave_hash(other)
        assert [partition_hash(p) for p in enclave.partitions] == [
            partition_hash(p) for p in other.partitions
        ]
