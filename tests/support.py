"""Shared helpers: write a tree of files, build small enclave trees, load and validate them.

Imported by name (``from support import ...``) rather than from ``conftest``: several test
folders have a conftest.py of their own, and ``conftest`` would name whichever loaded last.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nclav.config import load_directory
from nclav.errors import Issue, SpecError
from nclav.graph import Graph, validate_graph
from nclav.plan import Action, Step
from nclav.records import StepRecord, step_records

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# Partition snippets (they start on line 3 of the partition's config.yml, see `enclave_files`).
HTTP = "produces: http\ndeclared_outputs: [hostname, port]\n"
TCP = "produces: tcp\ndeclared_outputs: [hostname, port]\n"
QUEUE = "produces: queue\ndeclared_outputs: [queue_url]\n"


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``{"rel/path": text or bytes}`` under ``root`` and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def enclave_files(
    directory: str, extra: str = "", *, enclave_id: str | None = None, **partitions: str
) -> dict[str, str]:
    """An enclave at ``directory`` (id = the directory name unless given) and its partitions.

    The enclave's ``extra`` text starts on line 4 of its config.yml; each partition (id = its
    keyword) gets ``id``/``name`` on lines 1-2, its text from line 3, and an empty main.tf.
    """
    eid = enclave_id or directory.rsplit("/", 1)[-1]
    files = {f"{directory}/config.yml": f"id: {eid}\nname: {eid}\nregion: r\n{extra}"}
    for pid, text in partitions.items():
        files[f"{directory}/{pid}/config.yml"] = f"id: {pid}\nname: {pid}\n{text}"
        files[f"{directory}/{pid}/main.tf"] = ""
    return files


# The seed README's diff fixture: one enclave, api and db partitions, two exports and an
# enclave-level import of its own db-tcp export (behaviour-spec 3.4).
SEED: dict[str, str] = {
    "product-a/dev/config.yml": """\
id: product-a-dev
name: Product A (Development)
cloud: local
region: local-1
exports:
  - name: api-http
    target_partition: api
    type: http
    to: any_enclave
    auth: token
  - name: db-tcp
    target_partition: db
    type: tcp
    to: { enclave: product-a-dev }
imports:
  - from: product-a-dev
    export_name: db-tcp
    alias: database
""",
    "product-a/dev/api/config.yml": """\
id: api
name: API
produces: http
inputs:
  db_host: "{{ database.hostname }}"
  db_port: "{{ database.port }}"
declared_outputs: [hostname, port]
""",
    "product-a/dev/api/main.tf": 'variable "db_host" {}\nvariable "db_port" {}\n',
    "product-a/dev/db/config.yml": """\
id: db
name: Database
produces: tcp
inputs:
  engine: postgres
declared_outputs: [hostname, port]
""",
    "product-a/dev/db/main.tf": 'variable "engine" {}\n',
}


def load_graph(root: Path) -> Graph:
    """Load and validate the tree at ``root``; issue paths are relative to ``root``."""
    return validate_graph(load_directory(root, display_root=""))


def spec_issues(root: Path) -> tuple[Issue, ...]:
    """The issues of a tree that must be invalid."""
    with pytest.raises(SpecError) as caught:
        load_graph(root)
    return caught.value.issues


def only_issue(root: Path) -> Issue:
    """The single issue of a tree with exactly one problem."""
    issues = spec_issues(root)
    assert len(issues) == 1, [i.render() for i in issues]
    return issues[0]


def chain(run_id: str, *ids: str) -> list[StepRecord]:
    """Steps ``ids`` where each depends on the one before (the first is ready)."""
    steps: list[Step] = []
    previous: tuple[str, ...] = ()
    for sid in ids:
        steps.append(Step(sid, Action.PROVISION_ENCLAVE, sid, None, previous))
        previous = (sid,)
    return step_records(run_id, steps)


class Counted:
    """A proxy counting the calls made through it by method name (only the names in ``only``,
    when given). A wrapper, not a subclass: the object's calls to itself are not counted."""

    def __init__(self, inner: Any, only: Collection[str] | None = None) -> None:
        self.inner = inner
        self.only = only
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or (self.only is not None and name not in self.only):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted
