"""What every command shares: settings, exit codes, errors, output and the client factory.

Only click and the standard library's cheapest modules are imported here: this module is
loaded on every start of the CLI.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nclav.cli.client import Client

EXIT_OK = 0
EXIT_FAILED = 1  # a run or a request failed
EXIT_INVALID = 2  # invalid configuration or usage
EXIT_UNREACHABLE = 3  # cannot reach or authenticate to the server
EXIT_INTERRUPTED = 130

DEFAULT_URL = "http://localhost:8080"

F = Any  # a click callback; click's own typing of decorators is loose


class Settings:
    """The global options, from the group or from any client command (the last one wins)."""

    __slots__ = ("debug", "remote", "token", "verbose")

    def __init__(self) -> None:
        self.remote: str | None = None
        self.token: str | None = None
        self.verbose = 0
        self.debug = False

    def url(self) -> str:
        """--remote, else NCLAV_URL, else the local server (on NCLAV_PORT, as ``nclav serve``
        reads it); without a trailing slash."""
        return (self.remote or os.environ.get("NCLAV_URL") or default_url()).rstrip("/")


def default_url() -> str:
    """The local server's URL: ``http://localhost:<NCLAV_PORT or 8080>``."""
    port = os.environ.get("NCLAV_PORT", "").strip()
    if not port:
        return DEFAULT_URL
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise InvalidError(f"NCLAV_PORT: expected a port number from 1 to 65535, got {port!r}")
    return f"http://localhost:{int(port)}"


def settings(ctx: click.Context | None = None) -> Settings:
    ctx = ctx or click.get_current_context()
    return ctx.find_root().ensure_object(Settings)


class CliError(Exception):
    """A failure the user can act on: printed as ``Error: message`` plus detail lines."""

    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str,
        lines: Iterable[str] = (),
        *,
        hint: str | None = None,
        exit_code: int | None = None,
        issues: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.lines = list(lines)
        self.hint = hint
        self.issues = list(issues)
        if exit_code is not None:
            self.exit_code = exit_code

    def show(self) -> None:
        """``path:line: field: message`` issues as ``nclav validate`` prints them, then
        ``Error: message`` with its detail lines and hint."""
        for line in self.issues:
            err(line)
        if self.issues and not self.lines and not self.hint:
            err(self.message)  # "N error(s) in DIR", exactly as validate ends
            return
        err(style(f"Error: {self.message}", fg="red", err=True))
        for line in self.lines:
            err(line)
        if self.hint:
            err(self.hint)


class InvalidError(CliError):
    """Invalid configuration or usage (exit 2)."""

    exit_code = EXIT_INVALID


class UnreachableError(CliError):
    """The server cannot be reached, or refused our credentials (exit 3)."""

    exit_code = EXIT_UNREACHABLE


# -- output ------------------------------------------------------------------------------


def out(text: str = "", nl: bool = True) -> None:
    """A result, on stdout."""
    click.echo(text, nl=nl)


def err(text: str = "", nl: bool = True) -> None:
    """A diagnostic, on stderr."""
    click.echo(text, err=True, nl=nl)


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def colors(err: bool = False) -> bool:
    """Colours only on a terminal, never with NO_COLOR set (https://no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_tty(sys.stderr if err else sys.stdout)


def style(text: str, *, err: bool = False, **styles: Any) -> str:
    return click.style(text, **styles) if colors(err) else text


def print_json(doc: object) -> None:
    import json

    out(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))


# -- options -------------------------------------------------------------------------------


def _store(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False or value == 0:
            return
        found = settings(ctx)
        if attr == "verbose":
            found.verbose += int(value)
        else:
            setattr(found, attr, value)

    return callback


def global_options(func: F) -> F:
    """--remote, --token, -v and --debug: on the group and again on every client command."""
    options = [
        click.option(
            "--remote",
            metavar="URL",
            expose_value=False,
            callback=_store("remote"),
            help="nclav server to talk to [env NCLAV_URL; default http://localhost:NCLAV_PORT, "
            "port 8080 when unset].",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            expose_value=False,
            callback=_store("token"),
            help="API token [env NCLAV_TOKEN; default: the file $NCLAV_HOME/token, "
            "else ~/.nclav/token].",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_store("verbose"),
            help="Log every HTTP request to stderr.",
        ),
        click.option(
            "--debug",
            is_flag=True,
            expose_value=False,
            callback=_store("debug"),
            help="Show tracebacks of unexpected errors.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_option(*choices: str, default: str = "text") -> Callable[[F], F]:
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help="Result format; json is for machines (stdout holds only the JSON document).",
    )


def client(ctx: click.Context | None = None) -> Client:
    """An HTTP client for the server the global options point at."""
    from nclav.cli.client import Client, resolve_token

    found = settings(ctx)
    return Client(found.url(), lambda: resolve_token(found.token), verbose=found.verbose > 0)


__all__ = [
    "DEFAULT_URL",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "CliError",
    "InvalidError",
    "Settings",
    "UnreachableError",
    "client",
    "colors",
    "err",
    "global_options",
    "is_tty",
    "out",
    "output_option",
    "print_json",
    "settings",
    "style",
]
