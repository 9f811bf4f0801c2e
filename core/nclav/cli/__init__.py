"""The ``nclav`` command line: a thin HTTP client of the nclav server, plus ``serve``.

Only click and each command's small module are imported at start-up; a command imports what it
needs when it runs (the HTTP client, the loader, pydantic...), so ``nclav --help`` stays fast.

Modules: ``common`` (settings, exit codes, errors, output), ``client`` (HTTP), ``render``
(text from the API's JSON), ``follow`` (run progress), and one module per command family.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nclav.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CliError,
    err,
    global_options,
    settings,
)
from nclav.cli.drift import drift
from nclav.cli.events import events
from nclav.cli.history import iac, runs
from nclav.cli.init import init
from nclav.cli.reconcile import apply, diff
from nclav.cli.schema import schema
from nclav.cli.serve import serve
from nclav.cli.show import graph, orphans, status
from nclav.cli.source import source
from nclav.cli.teardown import destroy
from nclav.cli.validate import validate


class NclavGroup(click.Group):
    """Turns a ``CliError`` into its message and exit code; other errors into one line
    (the traceback with --debug)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # the order they were added: the order people use them

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            if settings(ctx).debug:
                import traceback

                traceback.print_exc()
            exc.show()
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # e.g. `nclav graph | head`: stop quietly
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(EXIT_FAILED)
        except Exception as exc:
            if settings(ctx).debug:
                raise
            err(f"Error: unexpected {type(exc).__name__}: {exc}")
            err("Run again with --debug for the traceback.")
            ctx.exit(EXIT_FAILED)


@click.group(name="nclav", cls=NclavGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nclav", prog_name="nclav", message="%(prog)s %(version)s")
@global_options
def main() -> None:
    """nclav: GitOps orchestration of isolated cloud environments.

    Every command but `serve` and `validate` talks HTTP to an nclav server: --remote or
    NCLAV_URL (default http://localhost:8080), with the token from --token, NCLAV_TOKEN or
    the file written by `nclav serve` ($NCLAV_HOME/token, else ~/.nclav/token).

    Exit codes: 0 success, 1 a run or request failed, 2 invalid configuration or usage,
    3 cannot reach or authenticate to the server. Results go to stdout, diagnostics to stderr.

    Shell completion: eval "$(_NCLAV_COMPLETE=bash_source nclav)" in ~/.bashrc, or
    eval "$(_NCLAV_COMPLETE=zsh_source nclav)" in ~/.zshrc.

    \b
    Example:
      nclav serve &
      nclav diff examples/product-a/enclaves
      nclav apply examples/product-a/enclaves
      nclav graph --output dot | dot -Tsvg > graph.svg
    """


for _command in (
    serve,
    init,
    validate,
    diff,
    apply,
    status,
    graph,
    destroy,
    orphans,
    runs,
    events,
    iac,
    drift,
    schema,
    source,
):
    main.add_command(_command)

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "EXIT_UNREACHABLE", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
