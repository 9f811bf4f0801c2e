"""``nclav serve``: the local server (the one command that is not a thin client)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from nclav.cli.common import EXIT_FAILED, EXIT_INVALID, InvalidError, settings
from nclav.cli.source import git_options, git_settings

if TYPE_CHECKING:
    from collections.abc import Callable

CLOUDS = ["local", "gcp", "azure", "aws"]


# The seed's AWS driver settings: (flag, option name, help). They reach the driver as a
# generic mapping (LocalOptions.driver_options["aws"]), so serve never imports it.
AWS_OPTIONS = (
    ("--aws-org-unit-id", "org_unit_id", "OU id where new account enclaves are placed."),
    ("--aws-email-domain", "email_domain", "Email domain for new account registration."),
    ("--aws-default-region", "default_region", "Default AWS region (default: us-east-1)."),
    ("--aws-account-prefix", "account_prefix", "Prefix for account names (myorg -> myorg-<id>)."),
    (
        "--aws-cross-account-role",
        "cross_account_role",
        "IAM role assumed in enclave accounts (default: OrganizationAccountAccessRole).",
    ),
    ("--aws-role-arn", "role_arn", "IAM role ARN assumed for management API calls."),
)


def _aws_options(command: Callable[..., None]) -> Callable[..., None]:
    for flag, name, text in reversed(AWS_OPTIONS):
        command = click.option(
            flag, f"aws_{name}", envvar=f"NCLAV_AWS_{name.upper()}", default=None, help=text
        )(command)
    return command


@click.command(short_help="Run the nclav server and its workers here.")
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
@click.option(
    "--lease-s",
    "lease_s",
    type=click.FloatRange(1, 3600),
    default=30.0,
    show_default=True,
    envvar="NCLAV_LEASE_S",
    help="Seconds a step (and its partition) stays claimed by a worker that stopped renewing "
    "it; after a crash, unfinished steps resume this long after the next start.",
)
@_aws_options
@git_options
def serve(
    cloud: str,
    enable_cloud: tuple[str, ...],
    bind: str,
    port: int,
    ephemeral: bool,
    rotate_token: bool,
    home: str,
    workers: int,
    lease_s: float,
    git_url: str | None,
    git_branch: str | None,
    git_path: str | None,
    rotate_webhook_secret: bool,
    **aws: str | None,
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
      nclav serve --cloud aws --aws-org-unit-id ou-ab12-cdef3456 --aws-email-domain example.com
    """
    if settings().remote:  # NCLAV_URL is ignored here: it is for the client commands
        raise InvalidError("serve does not support --remote; run the server locally")
    import logging
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
            lease_s=lease_s,
            driver_options={"aws": {k.removeprefix("aws_"): v for k, v in aws.items()}},
            # The git source (issue 15): flags over NCLAV_GIT_*; the secrets never in a flag.
            git=git_settings(os.environ, git_url, git_branch, git_path),
            git_token=os.environ.get("NCLAV_GIT_TOKEN") or None,
            git_webhook_secret=os.environ.get("NCLAV_GIT_WEBHOOK_SECRET") or None,
            rotate_webhook_secret=rotate_webhook_secret,
        )
        runtime = LocalRuntime(options, token)
    except (SpecError, TokenError) as exc:
        click.echo(f"nclav serve: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if created:
        click.echo(f"API token (saved to {home_path / 'token'}, mode 0600): {token}")
    if runtime.webhook_secret_created:
        click.echo(f"Webhook secret written to {home_path / 'webhook-secret'} (mode 0600)")
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


__all__ = ["serve"]
