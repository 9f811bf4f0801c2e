"""``nclav source``: the git source (show, ``set``, ``sync``, ``rotate-secret``), and the
``--git-*`` options of ``nclav serve``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from nclav.cli.common import client, global_options, out, output_option, print_json

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nclav.gitsource.settings import GitSettings


# -- serve's options ---------------------------------------------------------------------

_SERVE_FLAGS = (
    ("--git-url", "git_url", "NCLAV_GIT_URL", "Repository to follow (https; no credentials)."),
    ("--git-branch", "git_branch", "NCLAV_GIT_BRANCH", "Branch to follow (default: main)."),
    (
        "--git-path",
        "git_path",
        "NCLAV_GIT_PATH",
        "Path of the enclaves tree in the repository (default: enclaves; '.' for the root).",
    ),
)


def git_options(command: Callable[..., None]) -> Callable[..., None]:
    """``nclav serve``'s git source options; the rest are NCLAV_GIT_* variables."""
    for flag, name, env, text in reversed(_SERVE_FLAGS):
        command = click.option(flag, name, envvar=env, default=None, help=text)(command)
    return click.option(
        "--rotate-webhook-secret",
        is_flag=True,
        help="Replace the webhook secret (update the webhooks on the git host).",
    )(command)


def git_settings(
    env: Mapping[str, str], url: str | None, branch: str | None, path: str | None
) -> GitSettings:
    """NCLAV_GIT_* settings with serve's flags on top (SpecError names a bad one)."""
    from dataclasses import replace

    from nclav.gitsource.settings import GitSettings, check_branch, check_path, check_url

    base = GitSettings.from_env(env)
    return replace(
        base,
        url=check_url(url, "--git-url") if url else base.url,
        branch=check_branch(branch, "--git-branch") if branch else base.branch,
        path=check_path(path, "--git-path") if path else base.path,
    )


# -- nclav source --------------------------------------------------------------------------


def _show(doc: Mapping[str, Any]) -> None:
    if not doc.get("configured"):
        out("No git source configured. Set one with: nclav source set URL [--branch B --path P]")
    else:
        out(f"Repository:  {doc['url']}")
        out(f"Branch:      {doc['branch']}")
        out(f"Path:        {doc['path']}")
        out(f"Token:       {'set' if doc.get('token') else 'none (public repository)'}")
        poll = doc.get("poll_s") or 0
        out(f"Poll:        {f'every {poll:g}s' if poll else 'off'}")
        out(f"Previews:    {'on' if doc.get('preview_branches') else 'off'}")
        out(f"Statuses:    {'reported' if doc.get('statuses') else 'off'}")
        seen = doc.get("last_seen")
        out(f"Last seen:   {seen['commit'] if seen else '-'}")
        applied = doc.get("applied")
        if applied:
            out(f"Applied:     {applied['commit']} (run {applied['run_id']}, {applied['status']})")
        else:
            out("Applied:     -")
        pending = doc.get("pending")
        out(f"Pending:     {pending['commit'] if pending else '-'}")
    hook = doc.get("webhook") or {}
    out("")
    out("Webhook URLs (content type application/json, push events):")
    for path in hook.get("paths", []):
        out(f"  <server>{path}")
    out(f"Webhook secret: {hook.get('secret', '')}")
    pushes = doc.get("pushes") or []
    if pushes:
        out("")
        out("Recent pushes:")
        for p in pushes[:10]:
            out(f"  {p['at'][:19]}  {p['commit'][:12]}  {p['trigger']:<6} {p['outcome']}")


@click.group(invoke_without_command=True, short_help="Show the git source; `source set`, `sync`.")
@output_option("text", "json")
@global_options
@click.pass_context
def source(ctx: click.Context, output: str) -> None:
    """Show the git source this deployment follows: repository, branch, path, the last
    commit seen, the commit applied, what is pending, and how to set up the webhook.

    \b
    Example:
      nclav source
      nclav source set https://github.com/acme/infra --branch main --path enclaves
      nclav source sync
    """
    if ctx.invoked_subcommand is not None:
        return
    doc = client().get("/source")
    if output == "json":
        print_json(doc)
    else:
        _show(doc)


@source.command("set")
@click.argument("url")
@click.option("--branch", default=None, help="Branch to follow (default: main).")
@click.option("--path", "path", default=None, help="Enclaves tree in the repository.")
@click.option(
    "--token-stdin",
    is_flag=True,
    help="Read an HTTPS token for a private repository from stdin (stored in the secret store).",
)
@output_option("text", "json")
@global_options
def source_set(
    url: str, branch: str | None, path: str | None, token_stdin: bool, output: str
) -> None:
    """Follow URL: pushes to its branch reconcile the tree at its path.

    \b
    Example:
      nclav source set https://github.com/acme/infra
      echo "$GITHUB_TOKEN" | nclav source set https://github.com/acme/infra --token-stdin
    """
    body: dict[str, Any] = {"url": url, "branch": branch, "path": path}
    if token_stdin:
        body["token"] = sys.stdin.readline().strip() or None
    doc = client().request("PUT", "/source", json_body=body).json()
    if output == "json":
        print_json(doc)
    else:
        _show(doc)


@source.command("sync")
@click.option(
    "--wait", "wait_s", type=click.FloatRange(0, 3600), default=0, help="Seconds to wait."
)
@output_option("text", "json")
@global_options
def source_sync(wait_s: float, output: str) -> None:
    """Fetch the branch head now and reconcile it.

    \b
    Example:
      nclav source sync
      nclav source sync --wait 600
    """
    doc = client().post("/source/sync", {}, query={"wait": wait_s or None})
    if output == "json":
        print_json(doc)
    elif doc.get("run_id"):
        out(f"Commit {doc['commit']}: run {doc['run_id']} ({doc['status']})")
        out(f"Follow it with: nclav runs show {doc['run_id']} --follow")
    else:
        out(f"Commit {doc.get('commit')}: {doc.get('status')}")


@source.command("rotate-secret")
@global_options
def source_rotate_secret() -> None:
    """Replace the webhook secret; paste the new one into the git host's webhook settings.

    \b
    Example:
      nclav source rotate-secret
    """
    doc = client().post("/source/webhook-secret", {})
    out(f"New webhook secret: {doc['webhook_secret']}")


__all__ = ["git_options", "git_settings", "source"]
