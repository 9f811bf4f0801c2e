"""``nclav serve``: the local server (the one command that is not a thin client)."""

from __future__ import annotations

import os
import sys

import click

from nclav.cli.common import EXIT_FAILED, EXIT_INVALID, InvalidError, settings


class ServeCommand(click.Command):
    """``serve`` with one ``--<cloud>-<option>`` flag (env ``NCLAV_<CLOUD>_<OPTION>``) per
    option each installed driver plugin declares (``nclav.runtime.drivers``).

    The plugins are loaded the first time serve's parameters are needed (running or helping
    serve), never for ``nclav --help`` or another command.
    """

    driver_flags: dict[str, tuple[str, str]]  # parameter name -> (cloud, option)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not hasattr(self, "driver_flags"):
            from nclav.model import Cloud

            self.driver_flags = {}
            for param in self.params:  # the clouds nclav knows, without importing it at start
                if param.name in ("cloud", "enable_cloud"):
                    param.type = click.Choice([c.value for c in Cloud])
            self.params.extend(self._driver_options())
        return super().get_params(ctx)

    def _driver_options(self) -> list[click.Option]:
        from nclav.errors import ConfigurationError
        from nclav.runtime.drivers import env_name, flag, installed, plugin

        out = []
        for cloud in installed():
            try:
                found = plugin(cloud)
            except ConfigurationError:  # a broken plugin: reported when --cloud asks for it
                continue
            for option in found.options:
                name = f"driver_{cloud}_{option.name}"
                self.driver_flags[name] = (cloud, option.name)
                default = f" (default: {option.default})" if option.default else ""
                required = f" Required with --cloud {cloud}." if option.required else ""
                out.append(
                    click.Option(
                        [flag(cloud, option.name), name],
                        envvar=env_name(cloud, option.name),
                        default=None,
                        help=f"{option.help}{default}{required}",
                    )
                )
        return out


@click.command(cls=ServeCommand, short_help="Run the nclav server and its workers here.")
@click.option(
    "--cloud",
    default="local",
    show_default=True,
    envvar="NCLAV_CLOUD",
    help="Default cloud of enclaves that omit `cloud:`.",
)
@click.option(
    "--enable-cloud",
    "enable_cloud",
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
@click.option(
    "--bundle-cache-mib",
    "bundle_cache_mib",
    type=click.IntRange(1, 65536),
    default=32,
    show_default=True,
    envvar="NCLAV_BUNDLE_CACHE_MIB",
    help="Memory (estimated) kept for loaded bundles; the least recently used go first.",
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
    lease_s: float,
    bundle_cache_mib: int,
    **driver_values: str | None,
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
    # Everything this process and its terraform create is its owner's alone (0600 / 0700):
    # state, state versions, logs and workspaces hold secrets. The adapters also set their
    # own modes; the umask covers the rest (terraform's files, workspaces).
    os.umask(0o077)
    import logging
    import signal
    import threading
    from pathlib import Path

    from nclav.api.auth import TokenError, load_or_create_token
    from nclav.api.server import bind_server, listen_error
    from nclav.errors import ConfigurationError, SpecError
    from nclav.local.runtime import LocalOptions, LocalRuntime
    from nclav.model import Cloud

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    home_path = Path(home)
    # Listen first: a port in use is reported before a home or a token is created.
    try:
        listener = bind_server(bind, port)
    except OSError as exc:
        click.echo(f"nclav serve: {listen_error(bind, port, exc)}", err=True)
        sys.exit(EXIT_FAILED)
    _warn_if_shared(home_path, ephemeral)
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
            bundle_cache_bytes=bundle_cache_mib * 1024 * 1024,
            driver_options=_by_cloud(driver_values),
        )
        runtime = LocalRuntime(options, token)
    except (SpecError, TokenError, ConfigurationError) as exc:
        listener.server_close()
        click.echo(f"nclav serve: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if created:
        click.echo(f"API token (saved to {home_path / 'token'}, mode 0600): {token}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    url = runtime.start(listener)
    store = "memory (--ephemeral)" if ephemeral else str(home_path / "state.db")
    click.echo(f"nclav listening on {url} (state: {store}); Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        click.echo("nclav: stopping (steps in flight finish first)", err=True)
        runtime.stop()


def _warn_if_shared(home: str | os.PathLike[str], ephemeral: bool) -> None:
    """One stderr line when HOME exists and its group or others may enter or read it."""
    import stat

    try:
        mode = stat.S_IMODE(os.stat(home).st_mode)
    except OSError:
        return  # created below, 0700
    if mode & 0o077:
        what = "the token" if ephemeral else "state, Terraform state, logs and the token"
        click.echo(
            f"nclav serve: warning: {home} is accessible to other users (mode {mode:04o}) and "
            f"holds {what}; run: chmod 700 {home}",
            err=True,
        )


def _by_cloud(values: dict[str, str | None]) -> dict[str, dict[str, str | None]]:
    """serve's driver flag values by cloud and option name."""
    flags = serve.driver_flags if isinstance(serve, ServeCommand) else {}
    out: dict[str, dict[str, str | None]] = {}
    for name, value in values.items():
        cloud, option = flags[name]
        out.setdefault(cloud, {})[option] = value
    return out


__all__ = ["ServeCommand", "serve"]
