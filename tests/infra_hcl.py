"""The Terraform roots under infra/ read as data, for the static checks of infra/gcp and
infra/azure (tests/gcp/test_infra_gcp.py, tests/azure/test_infra_azure.py).

``terraform validate`` needs each root's provider schema, and only hashicorp/aws is in the
offline provider mirror: the google and azurerm roots are checked by reading their
configuration instead. python-hcl2 parses every ``.tf`` file of a root; ``Root`` gives the
blocks by address (``resource``, ``data``, ``variable``, ``locals``, ``check``), resolves the
few expression shapes the checks need (``local.x``, ``merge(local.a, local.b)``, a variable's
default) and lists references to nothing declared (what ``validate`` would have refused first).
Expressions come back as text in ``${...}``, literal strings without quotes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parents[1]
_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)
_BLOCK_REF = re.compile(r"(?<![\w.\"-])((?:data\.)?[a-z][a-z0-9]*_[a-z0-9_]+)\.([a-z_][a-z0-9_-]*)")
_SIMPLE_REF = re.compile(r"(?<![\w.])(local|var)\.([a-z_][a-z0-9_]*)")


@dataclass
class Root:
    """One Terraform root: its blocks by kind and address, and its raw text."""

    path: Path
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str = ""

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (t, name), body in self.resources.items() if t == kind}

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        assert (kind, name) in self.resources, f"{self.path.name}: no resource {kind}.{name}"
        return self.resources[(kind, name)]

    def default(self, name: str) -> Any:
        body = self.variables[name]
        assert "default" in body, f"variable {name} has no default"
        return body["default"]

    def mapping(self, expression: Any) -> dict[str, Any]:
        """The map an expression names: a literal map, ``${local.x}`` or a ``merge`` of
        those (what environment variables and app settings are built from)."""
        if isinstance(expression, dict):
            return expression
        found = re.fullmatch(r"\$\{(.*)\}", str(expression).strip(), re.S)
        assert found, f"not an expression: {expression!r}"
        inner = found.group(1).strip()
        merged = re.fullmatch(r"merge\((.*)\)", inner, re.S)
        if merged is None:
            path = _local_name(inner).split(".")
            found_map: Any = self.locals[path[0]]
            for key in path[1:]:
                found_map = found_map[key]
            return self.mapping(found_map)
        out: dict[str, Any] = {}
        for part in _split_arguments(merged.group(1)):
            if part.startswith("{"):
                for pair in _split_arguments(part.strip()[1:-1]):
                    key, value = (x.strip() for x in pair.split("=", 1))
                    literal = re.fullmatch(r'"([^"$]*)"', value)
                    out[key.strip('"')] = literal.group(1) if literal else "${" + value + "}"
            else:
                out.update(self.mapping("${" + part + "}"))
        return out

    def unresolved(self) -> list[str]:
        """References (``type.name``, ``data.type.name``, ``local.x``, ``var.x``) to nothing
        declared in this root."""
        missing = set()
        declared_locals, declared_vars = set(self.locals), set(self.variables)
        for kind, name in _SIMPLE_REF.findall(_expressions(self.text)):
            if (kind == "local" and name not in declared_locals) or (
                kind == "var" and name not in declared_vars
            ):
                missing.add(f"{kind}.{name}")
        blocks = {f"{t}.{n}" for t, n in self.resources} | {f"data.{t}.{n}" for t, n in self.data}
        types = {t for t, _ in self.resources} | {f"data.{t}" for t, _ in self.data}
        for kind, name in _BLOCK_REF.findall(_expressions(self.text)):
            declared = f"{kind}.{name}" in blocks
            if kind in types and not declared:  # a type in use, not that name
                missing.add(f"{kind}.{name}")
            elif kind not in types and kind.startswith(("data.", "google_", "azurerm_")):
                missing.add(f"{kind}.{name}")  # a provider's type declared nowhere
        return sorted(missing)


def _local_name(expression: str) -> str:
    found = re.fullmatch(r"local\.([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)", expression.strip())
    assert found, f"not a local: {expression!r}"
    return found.group(1)


def _split_arguments(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def _expressions(text: str) -> str:
    """The text as expressions only: comments dropped, and of each string literal only its
    ``${...}`` interpolations kept (descriptions mention resource types in prose)."""
    out: list[str] = []
    i, n = 0, len(text)

    def interpolation(j: int) -> int:
        # text[j:j+2] == "${": copy the expression up to its closing brace, strings inside
        # it handled as literals again.
        depth, j = 1, j + 2
        out.append(" ")
        while j < n and depth:
            char = text[j]
            if char == '"':
                j = literal(j)
                continue
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth:
                out.append(char)
            j += 1
        out.append(" ")
        return j

    def literal(j: int) -> int:
        j += 1
        while j < n and text[j] != '"':
            if text[j] == "\\":
                j += 2
            elif text.startswith("${", j):
                j = interpolation(j)
            else:
                j += 1
        out.append('""')
        return j + 1

    while i < n:
        char = text[i]
        if char == '"':
            i = literal(i)
        elif char == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def load(name: str) -> Root:
    """infra/<name>, every ``.tf`` file of it."""
    path = ROOT / "infra" / name
    files = sorted(path.glob("*.tf"))
    assert files, f"no .tf files in {path}"
    root = Root(path)
    for tf in files:
        text = tf.read_text()
        root.text += text + "\n"
        parsed = hcl2.loads(text, serialization_options=_OPTIONS)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    root.resources[(kind, name)] = body
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    root.data[(kind, name)] = body
        for block in parsed.get("variable", []):
            root.variables.update(block)
        for block in parsed.get("locals", []):
            root.locals.update(block)
        for block in parsed.get("output", []):
            root.outputs.update(block)
        for block in parsed.get("check", []):
            root.checks.update(block)
    return root


def walk(node: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (attribute name, value) pair at any depth."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found.append((k, v))
            found += walk(v, k)
    elif isinstance(node, list):
        for item in node:
            found += walk(item, key)
    return found


def fmt_check(path: Path) -> None:
    """``terraform fmt -check -recursive`` on ``path``: skipped without terraform, failed
    without it under CI=true (as require_terraform in tests/e2e/serve_harness.py)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        if os.environ.get("CI") == "true":
            pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
        pytest.skip("terraform is not on PATH")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"terraform fmt -check {path}:\n{done.stdout}{done.stderr}"


def validate_offline(path: Path, provider: str) -> str:
    """``terraform init`` from the provider mirror, then ``validate``: the mirror
    (``NCLAV_TF_PLUGIN_DIR`` or /opt/tf-plugins) usually holds hashicorp/aws alone, so this
    skips and says so (the registry is not reachable from every test machine)."""
    mirror = Path(os.environ.get("NCLAV_TF_PLUGIN_DIR", "/opt/tf-plugins"))
    terraform = shutil.which("terraform")
    if (
        terraform is None
        or not (mirror / "registry.terraform.io" / "hashicorp" / provider).is_dir()
    ):
        pytest.skip(
            f"terraform validate needs the hashicorp/{provider} provider, which the offline "
            f"mirror {mirror} does not hold (only hashicorp/aws is there): infra/{path.name} "
            "is checked statically by this module instead"
        )
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"nclav-validate-{path.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(path, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    try:
        for args in (
            ["init", "-backend=false", "-input=false", f"-plugin-dir={mirror}"],
            ["validate"],
        ):
            done = subprocess.run(
                [terraform, *args, "-no-color"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
                check=False,
            )
            assert done.returncode == 0, f"terraform {args[0]}:\n{done.stdout}{done.stderr}"
        return done.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)


def evaluate(
    root: Root, local_names: list[str], expression: str, variables: dict[str, str] | None = None
) -> Any:
    """``expression`` evaluated by ``terraform console`` over the root's variable blocks and
    the locals named (which must not refer to resources: no provider is needed for them),
    as copied from the root's files; ``variables`` are ``-var`` values. ``ValueError`` with
    terraform's message when it refuses (a variable's validation fails, say)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        if os.environ.get("CI") == "true":
            pytest.fail("terraform is not on PATH: CI must run the terraform tests", pytrace=False)
        pytest.skip("terraform is not on PATH")
    blocks: dict[str, list[Any]] = {"variable": [], "locals": []}
    chosen: dict[str, Any] = {}
    for tf in sorted(root.path.glob("*.tf")):
        parsed = hcl2.loads(tf.read_text())  # the round-trip form (explicit blocks)
        blocks["variable"] += parsed.get("variable", [])
        for block in parsed.get("locals", []):
            chosen.update({k: v for k, v in block.items() if k in local_names})
    assert set(chosen) == set(local_names), f"no such locals: {set(local_names) - set(chosen)}"
    blocks["locals"] = [{"__is_block__": True, **chosen}]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"nclav-console-{root.path.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        (work / "main.tf").write_text(hcl2.dumps(blocks))
        args = [f"-var={k}={v}" for k, v in (variables or {}).items()]
        done = subprocess.run(
            [terraform, "console", "-no-color", *args],
            cwd=work,
            input=f"jsonencode({expression})\n",
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CHECKPOINT_DISABLE": "1"},
            check=False,
        )
        printed = [line for line in done.stdout.splitlines() if line.startswith('"')]
        if done.returncode != 0 or "Error:" in done.stderr or not printed:
            # What terraform refused (a variable's validation, a bad expression), in its words
            # (console still prints a value after a failed validation: that value is ignored).
            raise ValueError(" ".join(done.stderr.split()))
        return json.loads(json.loads(printed[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def nclav_names_in_code(*paths: Path) -> set[str]:
    """Every ``NCLAV_*`` name written out in the Python under ``paths``."""
    names: set[str] = set()
    for path in paths:
        for py in path.rglob("*.py"):
            names |= set(re.findall(r"\bNCLAV_[A-Z0-9_]*[A-Z0-9]\b", py.read_text()))
    return names


__all__ = [
    "ROOT",
    "Root",
    "evaluate",
    "fmt_check",
    "load",
    "nclav_names_in_code",
    "validate_offline",
    "walk",
]
