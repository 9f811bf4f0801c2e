"""Property: any bytes as a config.yml give a tree or SpecError issues that each name a file
and a line (issue 8 §9: YAML read errors used to come without a line number)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nclav.config import load_bundle, load_directory
from nclav.errors import SpecError
from nclav.graph import validate_graph
from support import write_tree

FILES = {
    "e/config.yml": b"id: e\nname: E\nregion: r\n",
    "e/p/config.yml": b"id: p\nname: P\n",
    "e/p/main.tf": b"",
}
# Bytes that trip PyYAML's reader (control characters, invalid UTF-8), mixed into YAML text.
NASTY = st.sampled_from([b"\x00", b"\x07", b"\x1b", b"\x7f", b"\xff", b"\xc3", b"\xed\xa0\x80"])
TEXT = st.lists(
    st.one_of(st.sampled_from([b"id: e\n", b"name: ", b"region: r\n", b"\n", b"- "]), NASTY),
    max_size=12,
).map(b"".join)
CONTENT = st.one_of(st.binary(max_size=200), TEXT, st.text(max_size=120).map(str.encode))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=CONTENT, where=st.sampled_from(["e/config.yml", "e/p/config.yml"]))
@example(content=b"id: e\nname: E\x00\nregion: r\n", where="e/config.yml")
@example(content=b"id: p\nname: \xff\n", where="e/p/config.yml")
@example(content=b"[" * 5000, where="e/config.yml")
def test_any_bytes_give_a_tree_or_issues_with_a_path_and_a_line(content: bytes, where: str) -> None:
    files = {**FILES, where: content}
    for on_disk in (False, True):
        try:
            if on_disk:
                with tempfile.TemporaryDirectory() as tmp:
                    validate_graph(load_directory(write_tree(Path(tmp), files), display_root=""))
            else:
                validate_graph(load_bundle(files))
        except SpecError as exc:
            for issue in exc.issues:
                assert issue.path in files, issue
                assert issue.line is not None and issue.line >= 1, issue
                assert issue.message and "\n" not in issue.message, issue
                assert "<byte string>" not in issue.render(), issue
