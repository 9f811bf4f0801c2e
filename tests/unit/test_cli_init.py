"""``nclav init DIR``: a small tree that validates; a non-empty DIR only with --force.
(Applying it through a real server: tests/e2e/test_cli_events_init.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from click.testing import CliRunner

from nclav.cli import main
from nclav.cli.init import FILES

if TYPE_CHECKING:
    from pathlib import Path


def invoke(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(main, list(args))


def test_init_writes_a_tree_that_validates(tmp_path: Path) -> None:
    target = tmp_path / "new" / "enclaves"
    result = invoke("init", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(target / rel) for rel in FILES]
    assert result.stderr == f"Next: nclav validate {target} && nclav apply {target}\n"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(
        FILES
    )
    checked = invoke("validate", str(target))
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith("valid: 1 enclave(s), 1 partition(s), 1 export(s)")


def test_an_empty_existing_directory_is_fine(tmp_path: Path) -> None:
    assert invoke("init", str(tmp_path)).exit_code == 0


def test_a_non_empty_directory_needs_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("init", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: {tmp_path} is not empty (notes.txt)",
        "Choose an empty or new directory, or pass --force to write into it anyway.",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    forced = invoke("init", str(tmp_path), "--force")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert invoke("validate", str(tmp_path)).exit_code == 0


def test_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke("init", str(target))
    assert result.exit_code == 2
    assert target.read_text() == "x"
