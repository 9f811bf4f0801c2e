"""Graph validation of a loaded enclaves tree, and the dependency order it implies.

``validate_graph`` collects every problem (each placed on its file and line) before raising one
``SpecError``. On success it returns a ``Graph``: the enclaves in dependency order (exporters
before importers, ties in load order) and, per partition, the partitions whose outputs it reads.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any, TypeVar

from nclav._gc import paused_gc
from nclav.config._yaml import line_of
from nclav.errors import Issue, SpecError
from nclav.model import (
    AUTH_MATRIX,
    REQUIRED_OUTPUTS,
    Cloud,
    EnclaveTarget,
    Export,
    ExportTarget,
    Import,
)
from nclav.templates import ALL_TOKENS, CLOUD_TOKENS, COMMON_TOKENS, TemplateSyntaxError, tokens

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from nclav.config import Desired, LoadedEnclave, LoadedPartition

PartKey = tuple[str, str]  # (enclave id, partition id)
N = TypeVar("N", str, PartKey)


@dataclass(frozen=True, slots=True)
class Wiring:
    """An import that resolved to an export."""

    importer: str
    partition: str | None  # the importing partition, None for an enclave-level import
    imp: Import
    export: Export

    @property
    def exporter(self) -> str:
        return self.imp.from_

    @property
    def upstream(self) -> PartKey:
        return (self.imp.from_, self.export.target_partition)


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    desired: Desired
    order: tuple[str, ...]  # enclave ids, exporters first
    enclaves: Mapping[str, LoadedEnclave]
    aliases: Mapping[str, Mapping[str, Wiring]]  # enclave id -> alias -> wiring
    upstream: Mapping[PartKey, tuple[PartKey, ...]] = field(default_factory=dict)
    default_cloud: Cloud | None = None

    def partition_order(self, enclave_id: str) -> tuple[LoadedPartition, ...]:
        """The enclave's partitions, each after the partitions of the same enclave it reads."""
        enclave = self.enclaves[enclave_id]
        index = {p.id: i for i, p in enumerate(enclave.partitions)}
        deps = {
            p.id: [u[1] for u in self.upstream.get((enclave_id, p.id), ()) if u[0] == enclave_id]
            for p in enclave.partitions
        }
        ordered = kahn(list(index), deps, index)
        return tuple(enclave.partitions[index[pid]] for pid in ordered)


def admits(target: ExportTarget, importer: str) -> bool:
    if isinstance(target, str):
        return True  # public, any_enclave, vpn
    if isinstance(target, EnclaveTarget):
        return target.enclave == importer
    return False  # {partition: ...} is reserved: it admits no import


def kahn(nodes: list[N], deps: Mapping[N, Iterable[N]], rank: Mapping[N, int]) -> list[N]:
    """Topological order (deps first), ties broken by ``rank`` (unique per node).

    Nodes on a cycle, and nodes after one, are left out: a shorter result means a cycle.
    """
    indegree = dict.fromkeys(nodes, 0)
    children: dict[N, list[N]] = {n: [] for n in nodes}
    for node in nodes:
        for dep in set(deps.get(node, ())):
            if dep in indegree and dep != node:
                indegree[node] += 1
                children[dep].append(node)
    ready = [(rank[n], n) for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    out: list[N] = []
    while ready:
        _, node = heapq.heappop(ready)
        out.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, (rank[child], child))
    return out


class _Checker:
    def __init__(self, desired: Desired, default_cloud: Cloud | None) -> None:
        self.desired = desired
        self.default_cloud = default_cloud
        self.issues: list[Issue] = []
        self.enclaves: dict[str, LoadedEnclave] = {}
        self.aliases: dict[str, dict[str, Wiring]] = {}
        self.upstream: dict[PartKey, list[PartKey]] = {}

    def left_out(self, enclave: str, partition: str, key: str = "", name: str = "") -> bool:
        """Whether the loader left this out of a broken document (its error is reported
        already): a check that would only report its absence stays quiet."""
        broken = self.desired.broken
        if not broken:
            return False
        return any(
            (e, p, k, n) in broken
            for e in (enclave, "*")
            for p in ((partition, "*") if partition else ("",))
            for k, n in (((key, name), (key, "*")) if key else (("", ""),))
        )

    def add(
        self, where: LoadedEnclave | LoadedPartition, loc: tuple[str | int, ...], msg: str
    ) -> None:
        field_name = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(
            ".[", "["
        )
        self.issues.append(Issue(where.path, line_of(where.node(), loc), field_name, msg))

    # -- per enclave ---------------------------------------------------------------------

    def check_ids(self) -> None:
        for enclave in self.desired.enclaves:
            first = self.enclaves.get(enclave.id)
            if first is not None:
                self.add(
                    enclave,
                    ("id",),
                    f"duplicate enclave id {enclave.id!r} (first declared in {first.path})",
                )
                continue
            self.enclaves[enclave.id] = enclave
            seen: dict[str, LoadedPartition] = {}
            for part in enclave.partitions:
                if part.id in seen:
                    self.add(
                        part,
                        ("id",),
                        f"duplicate partition id {part.id!r} in enclave "
                        f"{enclave.id!r} (also {seen[part.id].path})",
                    )
                seen[part.id] = part
            names: set[str] = set()
            for i, export in enumerate(enclave.config.exports):
                if export.name in names:
                    self.add(
                        enclave, ("exports", i, "name"), f"duplicate export name {export.name!r}"
                    )
                names.add(export.name)

    def check_exports(self, enclave: LoadedEnclave) -> None:
        for i, export in enumerate(enclave.config.exports):
            allowed = AUTH_MATRIX[export.export_type]
            if export.auth not in allowed:
                ok = ", ".join(sorted(a.value for a in allowed))
                self.add(
                    enclave,
                    ("exports", i, "auth"),
                    f"incompatible auth: export {export.name!r} has type "
                    f"{export.export_type.value} but auth {export.auth.value}; "
                    f"{export.export_type.value} exports take: {ok}",
                )
            target = enclave.partition(export.target_partition)
            if target is None and self.left_out(enclave.id, export.target_partition):
                continue
            if target is None:
                known = ", ".join(p.id for p in enclave.partitions) or "none"
                self.add(
                    enclave,
                    ("exports", i, "target_partition"),
                    f"export {export.name!r} targets unknown partition "
                    f"{export.target_partition!r} (partitions: {known})",
                )
            elif target.config.produces != export.export_type and not self.left_out(
                enclave.id, target.id, "produces"
            ):
                produces = target.config.produces
                what = f"produces {produces.value}" if produces else "declares no produces"
                self.add(
                    enclave,
                    ("exports", i, "type"),
                    f"export {export.name!r} has type {export.export_type.value} but its "
                    f"target partition {target.id!r} {what}",
                )

    def check_partition(self, enclave: LoadedEnclave, part: LoadedPartition) -> None:
        cfg = part.config
        if cfg.produces is not None:
            missing = [k for k in REQUIRED_OUTPUTS[cfg.produces] if k not in cfg.declared_outputs]
            if missing and not self.left_out(enclave.id, part.id, "declared_outputs"):
                self.add(
                    part,
                    ("declared_outputs",) if cfg.declared_outputs else ("produces",),
                    f"a partition that produces {cfg.produces.value} must declare outputs "
                    f"{', '.join(REQUIRED_OUTPUTS[cfg.produces])}; missing: {', '.join(missing)}",
                )
        for i, name in enumerate(cfg.declared_outputs):
            if name in cfg.declared_outputs[:i]:
                self.add(part, ("declared_outputs", i), f"duplicate declared output {name!r}")
        for key in cfg.inputs:
            if key in ("nclav_enclave", "nclav_partition"):
                self.add(part, ("inputs", key), f"{key!r} is reserved: nclav always sets it")
        source = cfg.terraform.source if cfg.terraform else None
        if source and part.has_tf_files:
            self.add(
                part,
                ("terraform", "source"),
                "terraform.source and .tf files in the partition directory are exclusive: "
                "remove the .tf files or the source",
            )
        elif not source and not part.has_tf_files:
            self.add(
                part,
                ("id",),
                f"partition has no .tf files in {part.dir or '.'}/ and no terraform.source",
            )

    def check_imports(self, enclave: LoadedEnclave) -> None:
        aliases: dict[str, Wiring] = {}
        self.aliases[enclave.id] = aliases
        sites: list[tuple[LoadedEnclave | LoadedPartition, str | None, int, Import]] = [
            (enclave, None, i, imp) for i, imp in enumerate(enclave.config.imports)
        ]
        for part in enclave.partitions:
            sites.extend((part, part.id, i, imp) for i, imp in enumerate(part.config.imports))
        for where, partition, i, imp in sites:
            loc: tuple[str | int, ...] = ("imports", i)
            if imp.alias in aliases:
                self.add(
                    where,
                    (*loc, "alias"),
                    f"duplicate import alias {imp.alias!r} in enclave "
                    f"{enclave.id!r} (enclave and partition imports share one namespace)",
                )
                continue
            source = self.enclaves.get(imp.from_)
            if source is None and self.left_out(imp.from_, ""):
                continue
            if source is None:
                self.add(where, (*loc, "from"), f"imports from unknown enclave {imp.from_!r}")
                continue
            export = next((e for e in source.config.exports if e.name == imp.export_name), None)
            if export is None and self.left_out(imp.from_, "", "exports", imp.export_name):
                continue
            if export is None:
                names = ", ".join(e.name for e in source.config.exports) or "none"
                self.add(
                    where,
                    (*loc, "export_name"),
                    f"enclave {imp.from_!r} has no export "
                    f"{imp.export_name!r} (its exports: {names})",
                )
                continue
            if not admits(export.to, enclave.id):
                self.add(
                    where,
                    loc,
                    f"access denied: export {export.name!r} of {imp.from_!r} "
                    f"does not admit enclave {enclave.id!r} (to: {_target_text(export.to)})",
                )
                continue
            aliases[imp.alias] = Wiring(enclave.id, partition, imp, export)

    def check_templates(self, enclave: LoadedEnclave) -> None:
        aliases = self.aliases.get(enclave.id, {})
        declared = {i.alias for i in enclave.config.imports}
        declared.update(i.alias for p in enclave.partitions for i in p.config.imports)
        cloud = enclave.config.cloud or self.default_cloud
        context = ALL_TOKENS if cloud is None else COMMON_TOKENS | CLOUD_TOKENS[cloud]
        for part in enclave.partitions:
            ups: list[PartKey] = [w.upstream for w in aliases.values() if w.partition == part.id]
            for key, value in part.config.inputs.items():
                loc = ("inputs", key)
                try:
                    found = list(tokens(value))
                except TemplateSyntaxError as exc:
                    self.add(part, loc, str(exc))
                    continue
                for token in found:
                    alias = token.alias
                    if alias is None:
                        if token.name not in context:
                            self.add(
                                part,
                                loc,
                                f"unknown token '{token.text}': expected one of "
                                f"{', '.join(sorted(context))}, or <import alias>.<output>",
                            )
                        continue
                    wiring = aliases.get(alias)
                    if wiring is None and (
                        alias in declared or self.left_out(enclave.id, "", "imports", alias)
                    ):
                        continue  # a declared import that failed: reported on the import
                    if wiring is None:
                        known = ", ".join(sorted(aliases)) or "none declared"
                        self.add(
                            part,
                            loc,
                            f"token '{token.text}' names unknown import alias "
                            f"{alias!r} (aliases: {known})",
                        )
                        continue
                    upstream = self.enclaves[wiring.exporter].partition(
                        wiring.export.target_partition
                    )
                    if upstream is None:
                        continue  # reported on the export
                    if token.key not in upstream.config.declared_outputs and not self.left_out(
                        wiring.exporter, upstream.id, "declared_outputs"
                    ):
                        outs = ", ".join(upstream.config.declared_outputs) or "none"
                        self.add(
                            part,
                            loc,
                            f"token '{token.text}': partition "
                            f"{wiring.exporter}/{upstream.id} declares no output "
                            f"{token.key!r} (declared: {outs})",
                        )
                        continue
                    ups.append(wiring.upstream)
            self.upstream[(enclave.id, part.id)] = list(dict.fromkeys(ups))

    def check_network(self) -> None:
        by_cloud: dict[
            str, list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, LoadedEnclave]]
        ] = {}
        for enclave in self.enclaves.values():
            net = enclave.config.network
            if net is None:
                continue
            vpc = None
            if net.vpc_cidr is not None:
                vpc = self._cidr(enclave, ("network", "vpc_cidr"), net.vpc_cidr)
            subnets: list[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
            for i, text in enumerate(net.subnets):
                sub = self._cidr(enclave, ("network", "subnets", i), text)
                if sub is None:
                    continue
                if vpc is not None and (sub.version != vpc.version or not sub.subnet_of(vpc)):  # type: ignore[arg-type]
                    self.add(
                        enclave,
                        ("network", "subnets", i),
                        f"subnet {text} is not inside vpc_cidr {net.vpc_cidr}",
                    )
                for j, other in subnets:
                    if other.version == sub.version and sub.overlaps(other):
                        self.add(
                            enclave,
                            ("network", "subnets", i),
                            f"subnet {text} overlaps subnets[{j}] {net.subnets[j]}",
                        )
                subnets.append((i, sub))
            if vpc is not None:
                cloud = enclave.config.cloud or self.default_cloud or "default"
                by_cloud.setdefault(str(cloud), []).append((vpc, enclave))
        for cloud, nets in by_cloud.items():
            nets.sort(key=lambda item: (item[0].version, int(item[0].network_address)))
            for (a, ea), (b, eb) in zip(nets, nets[1:], strict=False):
                if a.version == b.version and a.overlaps(b):
                    self.add(
                        eb,
                        ("network", "vpc_cidr"),
                        f"vpc_cidr {b} overlaps {a} of enclave {ea.id!r} (both on cloud {cloud})",
                    )

    def _cidr(
        self, enclave: LoadedEnclave, loc: tuple[str | int, ...], text: str
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {ipaddress.ip_network(text, strict=False)}?)"
            self.add(enclave, loc, f"invalid CIDR {text!r}: {exc}{hint}")
            return None

    # -- cycles and order ----------------------------------------------------------------

    def enclave_order(self) -> list[str]:
        deps: dict[str, set[str]] = {eid: set() for eid in self.enclaves}
        for eid, aliases in self.aliases.items():
            deps[eid].update(w.exporter for w in aliases.values() if w.exporter != eid)
        rank = {eid: i for i, eid in enumerate(self.enclaves)}
        order = kahn(list(self.enclaves), deps, rank)
        if len(order) == len(deps):
            return order
        cycle = _find_cycle(deps)
        first = self.enclaves[cycle[0]]
        self.add(first, ("imports",), "enclave dependency cycle: " + " -> ".join(reversed(cycle)))
        return []

    def check_partition_cycles(self) -> None:
        nodes = list(self.upstream)
        rank = {node: i for i, node in enumerate(nodes)}
        if len(kahn(nodes, self.upstream, rank)) < len(nodes):
            cycle = _find_cycle(self.upstream)
            enclave = self.enclaves[cycle[0][0]]
            part = enclave.partition(cycle[0][1])
            self.add(
                part or enclave,
                ("inputs",) if part else ("imports",),
                "partition dependency cycle: "
                + " -> ".join(f"{e}/{p}" for e, p in reversed(cycle)),
            )


def _find_cycle(deps: Mapping[Any, Iterable[Any]]) -> list[Any]:
    """Name one cycle (only called once ``kahn`` has shown there is one)."""
    try:
        TopologicalSorter({k: set(v) for k, v in deps.items()}).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return []


def _target_text(target: ExportTarget) -> str:
    if isinstance(target, str):
        return target
    return f"{{{', '.join(f'{k}: {v}' for k, v in target.model_dump().items())}}}"


def validate_graph(desired: Desired, default_cloud: Cloud | None = None) -> Graph:
    """Check every cross-file rule; raise one SpecError listing all problems."""
    with paused_gc():
        return _validate(desired, default_cloud)


def _validate(desired: Desired, default_cloud: Cloud | None) -> Graph:
    checker = _Checker(desired, default_cloud)
    checker.check_ids()
    for enclave in checker.enclaves.values():
        checker.check_exports(enclave)
        for part in enclave.partitions:
            checker.check_partition(enclave, part)
    for enclave in checker.enclaves.values():
        checker.check_imports(enclave)
    for enclave in checker.enclaves.values():
        checker.check_templates(enclave)
    checker.check_network()
    # Cycles are looked for among the references that resolved, whatever else is wrong.
    order = checker.enclave_order()
    checker.check_partition_cycles()
    if checker.issues:
        raise SpecError(sorted(checker.issues, key=lambda i: (i.path, i.line or 0)))
    return Graph(
        desired=desired,
        order=tuple(order),
        enclaves=checker.enclaves,
        aliases=checker.aliases,
        upstream={k: tuple(v) for k, v in checker.upstream.items()},
        default_cloud=default_cloud,
    )


__all__ = ["Graph", "PartKey", "Wiring", "admits", "kahn", "validate_graph"]
