"""Every command is documented (README's CLI reference and --help with an example), starts
light, completes in bash and zsh, and keeps its global options and usage exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from nclav.cli import main
from support import REPO

if TYPE_CHECKING:
    from collections.abc import Iterator


def walk(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from walk(command, path)


COMMANDS = list(walk())


def test_the_issue_s_commands_are_all_there() -> None:
    assert set(COMMANDS) == {
        ("serve",),
        ("validate",),
        ("diff",),
        ("apply",),
        ("status",),
        ("graph",),
        ("destroy",),
        ("orphans",),
        ("runs",),
        ("runs", "show"),
        ("runs", "approve"),
        ("runs", "cancel"),
        ("runs", "retry"),
        ("iac",),
        ("iac", "runs"),
        ("iac", "logs"),
        ("drift",),
        ("drift", "check"),
        ("drift", "ack"),
        ("init",),
        ("events",),
        ("schema",),
        ("source",),
        ("source", "set"),
        ("source", "sync"),
        ("source", "rotate-secret"),
    }


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "nclav")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: nclav {' '.join(path)}".rstrip())
    assert "Example:" in result.stdout
    examples = result.stdout.split("Example:", 1)[1]
    assert f"nclav {' '.join(path)}".rstrip() in examples


def cli_reference() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## CLI reference\n(.*?)(?=^## )", readme, re.M | re.S)
    assert match, "README.md has no '## CLI reference' section"
    return match.group(1)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_is_in_the_readme_cli_reference(path: tuple[str, ...]) -> None:
    section = cli_reference()
    assert f"### `nclav {' '.join(path)}" in section or f"`nclav {' '.join(path)}" in section


def test_readme_documents_exit_codes_env_and_completion() -> None:
    section = cli_reference()
    for text in ("NCLAV_URL", "NCLAV_TOKEN", "~/.nclav/token", "_NCLAV_COMPLETE", "NO_COLOR"):
        assert text in section
    for code in range(4):
        assert f"| `{code}` |" in section


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "nclav", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


HEAVY = ("pydantic", "yaml", "urllib.request", "http.client", "nclav.config", "nclav.bundle")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["apply", "--help"],
        ["iac", "logs", "--help"],
        ["init", "--help"],
        ["events", "--help"],
        ["schema", "--help"],
    ],
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys\nfrom nclav.cli import main\n"
        f"try:\n    main({args!r}, prog_name='nclav')\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "[]"


def test_version() -> None:
    done = run("--version")
    assert (done.returncode, done.stdout) == (0, "nclav 0.1.0\n")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_script(shell: str) -> None:
    done = run(_NCLAV_COMPLETE=f"{shell}_source")
    assert done.returncode == 0
    assert "_nclav_completion" in done.stdout
    assert "_NCLAV_COMPLETE" in done.stdout


def test_shell_completion_completes_commands_and_options() -> None:
    done = run(_NCLAV_COMPLETE="bash_complete", COMP_WORDS="nclav ap", COMP_CWORD="1")
    assert done.stdout.split() == ["plain,apply"]
    done = run(_NCLAV_COMPLETE="bash_complete", COMP_WORDS="nclav graph --output ", COMP_CWORD="3")
    assert done.stdout.split() == ["plain,text", "plain,json", "plain,dot"]


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    for args in (
        ["nope"],
        ["diff"],
        ["graph", "--output", "yaml"],
        ["apply", "x", "--max-deletes", "-1"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == ""


def test_serve_refuses_remote_but_not_nclav_url() -> None:
    result = CliRunner().invoke(main, ["--remote", "http://example.com", "serve"])
    assert result.exit_code == 2
    assert result.stderr == "Error: serve does not support --remote; run the server locally\n"


def test_global_options_are_accepted_before_and_after_the_command() -> None:
    from nclav.cli.common import Settings

    seen: list[Settings] = []

    @click.command()
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        from nclav.cli.common import settings

        seen.append(settings(ctx))

    from nclav.cli.common import global_options

    group = click.Group(commands={"probe": global_options(probe)})
    group = global_options(group)
    CliRunner().invoke(group, ["--remote", "http://a:1", "probe", "--token", "t", "-v", "-v"])
    CliRunner().invoke(group, ["--remote", "http://a:1", "probe", "--remote", "http://b:2/"])
    assert (seen[0].url(), seen[0].token, seen[0].verbose) == ("http://a:1", "t", 2)
    assert seen[1].url() == "http://b:2"


def test_nclav_url_is_the_default_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    from nclav.cli.common import Settings

    monkeypatch.delenv("NCLAV_URL", raising=False)
    assert Settings().url() == "http://localhost:8080"
    monkeypatch.setenv("NCLAV_URL", "https://nclav.example.com/")
    assert Settings().url() == "https://nclav.example.com"
