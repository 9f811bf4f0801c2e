"""Building a partition's Terraform/OpenTofu working directory.

A workspace holds real copies of the partition directory's files plus a few files nclav
generates. Everything nclav writes is listed in ``.nclav-manifest.json`` so the next
preparation can delete what the partition no longer has; files nclav did not write
(``.terraform/``, a lock file Terraform created, local state) are never touched.

Generated files use JSON syntax so no HCL quoting is involved:

* raw mode (no ``terraform.source``): ``nclav_context.auto.tfvars.json`` with
  ``nclav_enclave`` and ``nclav_partition`` followed by the inputs;
* module mode: ``nclav_module.tf.json`` (a module call passing the inputs) and
  ``nclav_outputs.tf.json`` (one root output per declared output);
* with a backend: ``nclav_backend.tf.json`` declaring an empty ``http`` backend whose settings
  are passed at init time (see ``HttpBackend``), so nothing secret is ever on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

from nclav.errors import PermanentError
from nclav.model import Backend

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

MANIFEST_FILE = ".nclav-manifest.json"
CONTEXT_FILE = "nclav_context.auto.tfvars.json"
MODULE_FILE = "nclav_module.tf.json"
OUTPUTS_FILE = "nclav_outputs.tf.json"
BACKEND_FILE = "nclav_backend.tf.json"
MODULE_NAME = "nclav_partition"

_GENERATED = frozenset({MANIFEST_FILE, CONTEXT_FILE, MODULE_FILE, OUTPUTS_FILE, BACKEND_FILE})
# Top-level names Terraform owns in a working directory. Partition files with these names are
# not copied (a developer's local run left them behind) and nclav never deletes them. The
# dependency lock file is not among them: a committed ``.terraform.lock.hcl`` is configuration
# and is copied; one Terraform created itself is not in the manifest and so is left alone.
_TERRAFORM_OWNED = frozenset(
    {
        ".terraform",
        ".terraform.tfstate.lock.info",
        "terraform.tfstate",
        "terraform.tfstate.backup",
        "terraform.tfstate.d",
    }
)
# Files the original implementation generated; removed when found in a reused workspace.
_LEGACY_GENERATED = ("nclav_backend.tf", "nclav_module.tf", "nclav_outputs.tf")
_LEGACY_CONTEXT = "nclav_context.auto.tfvars"
_CONFIG_SUFFIXES = (".tf", ".tf.json", ".tofu", ".tofu.json")
# Arguments a module block reserves for itself; an input with one of these names would clash.
_MODULE_META_ARGS = frozenset({"source", "version", "count", "for_each", "providers", "depends_on"})
_CONTEXT_VARS = ("nclav_enclave", "nclav_partition")
_TF_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class HttpBackend:
    """Where a partition's state lives: a ``/terraform/state`` HTTP endpoint.

    ``PartitionIac`` points it at its loopback backend (``nclav.iac.loopback``), and
    ``password`` is a credential for this partition during one IaC run. It travels only in
    ``TF_HTTP_PASSWORD`` (see ``env``), never in argv or a file, and is left out of ``repr``.
    """

    address: str
    enclave_id: str
    partition_id: str
    password: str = field(repr=False)

    @property
    def state_url(self) -> str:
        enclave = quote(self.enclave_id, safe="")
        partition = quote(self.partition_id, safe="")
        return f"{self.address.rstrip('/')}/terraform/state/{enclave}/{partition}"

    def backend_config_args(self) -> list[str]:
        """The ``-backend-config=`` arguments for ``init``; each is one argv element."""
        state = self.state_url
        return [
            f"-backend-config=address={state}",
            f"-backend-config=lock_address={state}/lock",
            f"-backend-config=unlock_address={state}/lock",
            "-backend-config=lock_method=POST",
            "-backend-config=unlock_method=DELETE",
            "-backend-config=username=nclav",
        ]

    def env(self) -> dict[str, str]:
        """Environment variables carrying the credential."""
        return {"TF_HTTP_PASSWORD": self.password}


def select_tool(
    backend: Backend,
    tool: str | None,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """Resolve the binary to run, returning the path ``which`` found.

    ``tool`` (a name or a path) wins when set. Otherwise opentofu runs ``tofu`` and terraform
    runs ``terraform``, falling back to ``tofu`` when only that is installed.
    """
    if tool:
        found = which(tool)
        if found is None:
            raise PermanentError(f"terraform.tool {tool!r} not found or not executable")
        return found
    if backend is Backend.OPENTOFU:
        found = which("tofu")
        if found is None:
            raise PermanentError(
                "tofu not found on PATH (backend: opentofu); install OpenTofu or set terraform.tool"
            )
        return found
    for name in ("terraform", "tofu"):
        found = which(name)
        if found is not None:
            return found
    raise PermanentError(
        "neither terraform nor tofu found on PATH; install one or set terraform.tool"
    )


def prepare_workspace(
    workdir: Path,
    *,
    files: Mapping[str, bytes],
    source: str | None,
    enclave_id: str,
    partition_id: str,
    inputs: Mapping[str, str],
    declared_outputs: Sequence[str],
    backend: HttpBackend | None,
) -> None:
    """Make ``workdir`` hold exactly the partition's files plus nclav's generated files.

    ``files`` maps '/'-separated relative paths to contents (``config.yml`` already left out).
    Raises ``PermanentError`` for a partition that cannot be turned into a workspace.
    """
    copies = _partition_files(files)
    _check_names(inputs, declared_outputs)
    generated: dict[str, bytes] = {}
    if source is None:
        generated[CONTEXT_FILE] = _json_bytes(_context(enclave_id, partition_id, inputs))
    else:
        _refuse_root_config(copies)
        generated[MODULE_FILE] = _json_bytes(_module_call(source, inputs))
        if declared_outputs:
            generated[OUTPUTS_FILE] = _json_bytes(_root_outputs(declared_outputs))
    if backend is not None:
        generated[BACKEND_FILE] = _json_bytes({"terraform": {"backend": {"http": {}}}})
    wanted = {**copies, **generated}

    workdir.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(workdir)
    _remove_legacy(workdir)
    for rel in sorted(previous - wanted.keys(), reverse=True):
        _remove_stale(workdir, rel)
    # Record the union first: if writing stops half-way, the next run still knows every file
    # nclav may have written and can clean it up.
    _write_manifest(workdir, previous | wanted.keys())
    for rel, data in sorted(wanted.items()):
        _write_file(workdir, rel, data)
    _write_manifest(workdir, set(wanted))


def _partition_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    copies: dict[str, bytes] = {}
    for raw, data in files.items():
        rel = _normalise(raw)
        top = rel.split("/", 1)[0]
        if top in _TERRAFORM_OWNED:
            continue
        if rel in _GENERATED:
            raise PermanentError(f"partition file {raw!r} uses a name reserved for nclav")
        copies[rel] = bytes(data)
    return copies


def _normalise(raw: str) -> str:
    path = PurePosixPath(raw)
    parts = path.parts
    if (
        not raw
        or "\\" in raw
        or "\x00" in raw
        or path.is_absolute()
        or not parts
        or any(p in (".", "..") for p in parts)
        or raw.endswith("/")
    ):
        raise PermanentError(f"partition file path {raw!r} is not a plain relative path")
    return "/".join(parts)


def _check_names(inputs: Mapping[str, str], declared_outputs: Sequence[str]) -> None:
    bad = [k for k in (*inputs, *declared_outputs) if not _TF_NAME.fullmatch(k)]
    if bad:
        names = ", ".join(repr(k) for k in bad)
        raise PermanentError(f"not valid Terraform names: {names}")


def _refuse_root_config(copies: Mapping[str, bytes]) -> None:
    clashing = sorted(rel for rel in copies if "/" not in rel and rel.endswith(_CONFIG_SUFFIXES))
    if clashing:
        raise PermanentError(
            "terraform.source is set, so the partition directory must not hold top-level "
            f"Terraform files; found: {', '.join(clashing)}"
        )


def _context(enclave_id: str, partition_id: str, inputs: Mapping[str, str]) -> dict[str, str]:
    reserved = sorted(k for k in inputs if k in _CONTEXT_VARS)
    if reserved:
        raise PermanentError(f"inputs may not set {', '.join(reserved)}: nclav sets it")
    context = {"nclav_enclave": enclave_id, "nclav_partition": partition_id}
    for key in sorted(inputs):
        context[key] = inputs[key]
    return context


def _module_call(source: str, inputs: Mapping[str, str]) -> dict[str, object]:
    reserved = sorted(k for k in inputs if k in _MODULE_META_ARGS)
    if reserved:
        raise PermanentError(
            f"inputs {', '.join(reserved)} clash with module arguments of the same name"
        )
    # ``source`` is read as a literal; argument strings are templates in Terraform's JSON
    # syntax, so ``${`` and ``%{`` are escaped to reach the module unchanged.
    call: dict[str, str] = {"source": source}
    for key in sorted(inputs):
        call[key] = _escape_template(inputs[key])
    return {"module": {MODULE_NAME: call}}


def _root_outputs(declared_outputs: Sequence[str]) -> dict[str, object]:
    # Every root output is marked sensitive: Terraform refuses to re-export a sensitive module
    # output otherwise, and values never belong in logs anyway. ``output -json`` still
    # returns them.
    outputs = {
        key: {"value": f"${{module.{MODULE_NAME}.{key}}}", "sensitive": True}
        for key in dict.fromkeys(declared_outputs)
    }
    return {"output": outputs}


def _escape_template(value: str) -> str:
    return value.replace("${", "$${").replace("%{", "%%{")


def _json_bytes(doc: object) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _read_manifest(workdir: Path) -> set[str]:
    path = workdir / MANIFEST_FILE
    if not path.is_file() or path.is_symlink():
        return set()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    entries = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return set()
    return {e for e in entries if isinstance(e, str)}


def _write_manifest(workdir: Path, paths: set[str]) -> None:
    doc = {"version": 1, "files": sorted(paths - {MANIFEST_FILE})}
    _write_file(workdir, MANIFEST_FILE, _json_bytes(doc))


def _remove_legacy(workdir: Path) -> None:
    for name in (*_LEGACY_GENERATED, _LEGACY_CONTEXT):
        path = workdir / name
        if path.is_file() and not path.is_symlink() and _is_legacy_generated(path):
            path.unlink()
    for entry in workdir.iterdir():
        if entry.is_symlink() and entry.name.endswith(".tf"):
            entry.unlink()


def _is_legacy_generated(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.readline().startswith(b"# Generated by nclav")


def _safe_target(workdir: Path, rel: str) -> Path | None:
    """``workdir/rel`` if it is a path nclav may write or delete, else None."""
    try:
        rel = _normalise(rel)
    except PermanentError:
        return None
    if rel.split("/", 1)[0] in _TERRAFORM_OWNED:
        return None
    target = workdir / rel
    parent = target.parent
    while parent != workdir:
        if parent.is_symlink():
            return None
        parent = parent.parent
    return target


def _remove_stale(workdir: Path, rel: str) -> None:
    target = _safe_target(workdir, rel)
    if target is None:
        return
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        # nclav only ever records files; a directory here is someone else's.
        return
    parent = target.parent
    while parent != workdir and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _write_file(workdir: Path, rel: str, data: bytes) -> None:
    target = _safe_target(workdir, rel)
    if target is None:
        raise PermanentError(f"cannot write {rel!r}: a parent directory is a symbolic link")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise PermanentError(f"cannot write {rel!r}: {parent.name!r} is not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise PermanentError(f"cannot write {rel!r}: a parent is not a directory") from exc
    if target.is_symlink():
        target.unlink()
    elif target.is_dir():
        try:
            target.rmdir()
        except OSError as exc:
            raise PermanentError(f"cannot write {rel!r}: a directory is in the way") from exc
    elif target.is_file() and target.read_bytes() == data:
        return
    tmp = target.with_name(f".{target.name}.nclav-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


__all__ = [
    "BACKEND_FILE",
    "CONTEXT_FILE",
    "MANIFEST_FILE",
    "MODULE_FILE",
    "MODULE_NAME",
    "OUTPUTS_FILE",
    "HttpBackend",
    "prepare_workspace",
    "select_tool",
]
