"""The ``nclav`` command line.

Only click is imported at start-up; each command imports what it needs when it runs, so
``nclav --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nclav", prog_name="nclav")
def main() -> None:
    """nclav: GitOps orchestration of isolated cloud environments.

    \b
    Examples:
      nclav validate examples/product-a/enclaves
    """


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--output",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Result format; json is for machines.",
)
@click.option(
    "--default-cloud",
    type=click.Choice(["local", "gcp", "azure", "aws"]),
    default=None,
    help="Cloud of enclaves that omit `cloud:` (as the server would resolve it).",
)
def validate(directory: str, output: str, default_cloud: str | None) -> None:
    """Check an enclaves directory offline: YAML, references, access, cycles, networks.

    Every problem is reported as `path:line: field: message`. Exits 0 when valid, 2 when not.

    \b
    Example:
      nclav validate ./enclaves
      nclav validate ./enclaves --output json | jq '.errors[].message'
    """
    from nclav.config import load_directory
    from nclav.errors import SpecError
    from nclav.graph import validate_graph
    from nclav.model import Cloud

    try:
        desired = load_directory(directory)
        graph = validate_graph(desired, Cloud(default_cloud) if default_cloud else None)
    except SpecError as exc:
        if output == "json":
            doc = {"valid": False, "errors": [i.to_json() for i in exc.issues]}
            click.echo(json.dumps(doc, indent=2, sort_keys=True))
        else:
            for issue in exc.issues:
                click.echo(issue.render(), err=True)
            click.echo(f"{len(exc.issues)} error(s) in {directory}", err=True)
        sys.exit(EXIT_INVALID)
    enclaves = len(graph.enclaves)
    partitions = sum(len(e.partitions) for e in graph.enclaves.values())
    exports = sum(len(e.config.exports) for e in graph.enclaves.values())
    imports = sum(len(a) for a in graph.aliases.values())
    if output == "json":
        counts = {
            "enclaves": enclaves,
            "partitions": partitions,
            "exports": exports,
            "imports": imports,
        }
        click.echo(
            json.dumps({"valid": True, "errors": [], "counts": counts}, indent=2, sort_keys=True)
        )
    else:
        click.echo(
            f"valid: {enclaves} enclave(s), {partitions} partition(s), "
            f"{exports} export(s), {imports} import(s) in {directory}"
        )


CLOUDS = ["local", "gcp", "azure", "aws"]


@main.command()
@click.option(
    "--cloud",
    type=click.Choice(CLOUDS),
    default="local",
    show_default=True,
    envvar="NCLAV_CLOUD",
    help="Default cloud of enclaves that omit `cloud:`.",
)
@click.option(
    "--enable-cloud",
    "enable_cloud",
    type=click.Choice(CLOUDS),
    multiple=True,
    help="Register another cloud's driver (repeatable).",
)
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    envvar="NCLAV_BIND",
    help="Address to listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    envvar="NCLAV_PORT",
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--ephemeral",
    is_flag=True,
    envvar="NCLAV_EPHEMERAL",
    help="Keep state in memory only (lost on exit).",
)
@click.option(
    "--rotate-token", is_flag=True, help="Replace the API token (old clients stop working)."
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="NCLAV_HOME",
    default=lambda: os.path.join(os.path.expanduser("~"), ".nclav"),
    show_default="~/.nclav",
    help="Where state, blobs, workspaces and the token live.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    envvar="NCLAV_WORKERS",
    help="Steps carried out at once.",
)
def serve(
    cloud: str,
    enable_cloud: tuple[str, ...],
    bind: str,
    port: int,
    ephemeral: bool,
    rotate_token: bool,
    home: str,
    workers: int,
) -> None:
    """Run the nclav API server and its workers on this machine.

    State lives in SQLite at HOME/state.db (or in memory with --ephemeral). On first start a
    64-character API token is written to HOME/token (mode 0600) and printed once; NCLAV_TOKEN
    overrides it. SIGINT/SIGTERM stop it cleanly: steps in flight finish, the rest resume on
    the next start.

    \b
    Example:
      nclav serve --cloud local
      NCLAV_PORT=9090 nclav serve --ephemeral
    """
    import signal
    import threading
    from pathlib import Path

    from nclav.api.auth import TokenError, load_or_create_token
    from nclav.errors import SpecError
    from nclav.local.runtime import LocalOptions, LocalRuntime
    from nclav.model import Cloud

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    home_path = Path(home)
    try:
        token, created = load_or_create_token(
            home_path / "token", rotate=rotate_token, env_token=os.environ.get("NCLAV_TOKEN")
        )
        options = LocalOptions(
            home=home_path,
            default_cloud=Cloud(cloud),
            enabled=tuple(Cloud(c) for c in enable_cloud),
            ephemeral=ephemeral,
            bind=bind,
            port=port,
            workers=workers,
        )
        runtime = LocalRuntime(options, token)
    except (SpecError, TokenError) as exc:
        click.echo(f"nclav serve: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if created:
        click.echo(f"API token (saved to {home_path / 'token'}, mode 0600): {token}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        url = runtime.start()
    except OSError as exc:
        click.echo(f"nclav serve: cannot listen on {bind}:{port}: {exc.strerror}", err=True)
        sys.exit(EXIT_FAILED)
    store = "memory (--ephemeral)" if ephemeral else str(home_path / "state.db")
    click.echo(f"nclav listening on {url} (state: {store}); Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        click.echo("nclav: stopping (steps in flight finish first)", err=True)
        runtime.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
