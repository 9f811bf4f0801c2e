"""``nclav diff DIR`` and ``nclav apply DIR``: pack, upload unless the server has it, plan, run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from nclav.cli.common import (
    InvalidError,
    client,
    err,
    global_options,
    out,
    output_option,
    print_json,
    style,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from nclav.cli.client import Client

_COLOURS = {"+": "green", "~": "yellow", "-": "red", ">": "cyan", "<": "cyan", "?": "magenta"}


def pack(directory: str) -> tuple[str, bytes]:
    """The tree's bundle digest and bytes; a broken tree exits 2 with ``path:line`` lines."""
    from nclav.bundle import pack_directory
    from nclav.errors import SpecError

    try:
        digest, data, _ = pack_directory(directory)
    except SpecError as exc:
        raise InvalidError(
            f"{len(exc.issues)} error(s) in {directory}", issues=[i.render() for i in exc.issues]
        ) from exc
    return digest, data


def upload(api: Client, digest: str, data: bytes) -> bool:
    """Send the bundle unless the server already holds that digest; True when it was sent.

    A large bundle goes in two steps where the server offers it (a signed URL straight to its
    blob store, ``nclav.api.uploads``), else, or on a 404, in the body of ``POST /bundles``."""
    from nclav.cli.client import ApiError

    try:
        api.request("GET", f"/bundles/{digest}")
        return False
    except ApiError as exc:
        if exc.status != 404:
            raise
    timeout = max(api.timeout_s, len(data) / 1_000_000)  # at least 1 MB/s
    if len(data) > SIGNED_UPLOAD_ABOVE and signed_upload(api, data, timeout):
        return True
    try:
        api.request(
            "POST", "/bundles", data=data, content_type="application/gzip", timeout_s=timeout
        )
    except ApiError as exc:
        # 413: the runtime caps request bodies below the bundle (an AWS function URL: 6 MB).
        if exc.status != 413 or not signed_upload(api, data, timeout):
            raise
    return True


# Above this, bundles go by signed upload where the server offers it: a function URL takes
# 6 MB per request, and a binary body arrives base64-encoded (4/3 larger).
SIGNED_UPLOAD_ABOVE = 4 * 1024 * 1024


def signed_upload(api: Client, data: bytes, timeout: float) -> bool:
    """Upload through ``POST /bundles/uploads`` (nclav.api.uploads); False when the server
    takes bundles directly (404)."""
    import hashlib
    import http.client
    from urllib.parse import urlsplit

    from nclav.cli.client import ApiError
    from nclav.cli.common import CliError

    sha256 = hashlib.sha256(data).hexdigest()
    try:
        grant = api.post("/bundles/uploads", {"sha256": sha256, "size": len(data)})
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    # Straight to the blob store: its URL carries its own authorization, never our token.
    # http.client, not urllib: urllib adds headers (Content-Type) the signature did not cover.
    url = urlsplit(str(grant["url"]))
    conn_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(url.netloc, timeout=timeout)
    try:
        conn.putrequest(str(grant["method"]), f"{url.path}?{url.query}", skip_accept_encoding=True)
        for name, value in dict(grant["headers"]).items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(data)
        answer = conn.getresponse()
        detail = answer.read()[:500].decode("utf-8", "replace")
    except OSError as exc:
        raise CliError(f"uploading the bundle to the server's signed URL failed: {exc}") from exc
    finally:
        conn.close()
    if answer.status >= 300:
        raise CliError(f"the blob store refused the bundle upload: {answer.status} {detail}")
    api.request("POST", str(grant["complete"]))
    return True


def dry_run(
    api: Client, digest: str, directory: str, *, allow_delete: bool = False
) -> dict[str, Any]:
    """The server's plan; its 422 issues are printed with paths under ``directory``."""
    from nclav.cli.client import InvalidRequest, issue_line

    body: dict[str, Any] = {"bundle": digest}
    if allow_delete:
        body["allow_delete"] = True
    try:
        doc: dict[str, Any] = api.post("/reconcile/dry-run", body)
    except InvalidRequest as exc:
        if not exc.details:
            raise
        raise InvalidError(
            f"{len(exc.details)} error(s) in {directory}",
            issues=[issue_line(d, directory) for d in exc.details],
        ) from exc
    return doc


def prepare(
    api: Client, directory: str, *, allow_delete: bool = False
) -> tuple[str, dict[str, Any]]:
    digest, data = pack(directory)
    sent = upload(api, digest, data)
    if api.verbose:
        err(f"bundle {digest}: {'uploaded' if sent else 'already on the server'}")
    return digest, dry_run(api, digest, directory, allow_delete=allow_delete)


def print_changes(changes: Sequence[Mapping[str, Any]]) -> None:
    from nclav.cli.render import change_lines

    for line in change_lines(changes):  # grouped under each change's enclave
        out(style(line, fg=_COLOURS.get(line.lstrip()[:1])))


def deletes_everything(api: Client, doc: Mapping[str, Any]) -> int:
    """How many enclaves the server holds when the dry run deletes every one of them, else 0."""
    if "deletes_every_enclave" in doc:
        return int(doc["deletes_every_enclave"] or 0)
    changes = doc.get("changes") or []  # a server without the field: ask for the count
    gone = sum(1 for c in changes if c.get("kind") == "EnclaveDeleted")
    if not gone:
        return 0
    held = int(api.get("/status").get("enclave_count", 0))
    return held if gone >= held else 0


def refuse_if_awaiting(
    run: Mapping[str, Any], directory: str, server_limit: int | None = None
) -> None:
    """The server's delete guard stopped the run: say why and how to go on (exit 2).

    Raising --max-deletes is suggested only when that would help: a request can lower the
    server's limit (``server_limit``, from the dry run), never raise it.
    """
    approval = run.get("approval") or {}
    if run.get("status") != "awaiting_approval":
        return
    run_id = str(run.get("id") or run.get("run_id"))
    gone = [str(g) for g in approval.get("deletions") or []]
    every = int(approval.get("every") or 0)
    limit = approval.get("limit")
    why = (
        f"the plan deletes every enclave on the server ({every})"
        if every
        else f"the plan deletes {len(gone)} enclave(s)/partition(s), "
        f"more than --max-deletes {limit}"
    )
    raise InvalidError(
        f"refusing to apply: {why}",
        [f"  - {g}" for g in gone],
        hint=f"Review the plan with `nclav diff {directory}`; if it is what you want, "
        "re-run with --allow-delete"
        + (
            ""
            if every or server_limit is None or len(gone) > server_limit
            else f" (or raise --max-deletes to {len(gone)})"
        )
        + f".\nOr approve run {run_id} as planned: nclav runs approve {run_id}"
        f" (or drop it: nclav runs cancel {run_id}).",
    )


@click.command(short_help="Show what `apply` would change.")
@click.argument("directory", type=click.Path(file_okay=False))
@output_option("text", "json")
@global_options
def diff(directory: str, output: str) -> None:
    """Show what `apply` would change, without changing anything.

    Packs DIRECTORY (only the files the loader reads: config.yml files and partition files),
    uploads it unless the server already has it, and asks the server for a dry run. Lines:
    `+` create, `~` update (with the reason), `-` delete or unwire, `>` export wired,
    `<` import wired. Exits 0 whatever the plan; 2 when the tree is invalid.

    \b
    Example:
      nclav diff ./enclaves
      nclav diff ./enclaves --output json | jq '.changes | length'
    """
    api = client()
    digest, doc = prepare(api, directory)
    changes = doc.get("changes") or []
    if output == "json":
        print_json(doc)
        return
    from nclav.cli.render import diff_summary

    print_changes(changes)
    out(diff_summary(changes))
    every = deletes_everything(api, doc)
    if every:
        warning = f"Warning: this plan deletes every enclave on the server ({every})."
        err(style(warning, fg="yellow", err=True))


@click.command(short_help="Apply a tree and follow the run to its end.")
@click.argument("directory", type=click.Path(file_okay=False))
@output_option("text", "json")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow the run to its end, or print its id and return at once.",
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="Plain progress lines even on a terminal (progress always goes to stderr).",
)
@click.option(
    "--max-deletes",
    type=click.IntRange(0),
    default=None,
    help="Stop before applying a plan that destroys more enclaves/partitions than this "
    "(it can only lower the server's limit, `serve --max-deletes`, 5 by default).",
)
@click.option(
    "--allow-delete",
    is_flag=True,
    help="Apply even a plan that deletes every enclave or more than the delete limit.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop following after SECONDS (exit 1); the run carries on on the server.",
)
@global_options
def apply(
    directory: str,
    output: str,
    wait: bool,
    no_progress: bool,
    max_deletes: int | None,
    allow_delete: bool,
    timeout: float | None,
) -> None:
    """Apply an enclaves tree: plan it, then provision and tear down until it matches.

    Packs and uploads DIRECTORY like `diff`, prints the plan, then starts a reconcile run and
    follows it with live per-step progress on stderr (plain lines when stderr is not a
    terminal, or with --no-progress). The final report goes to stdout; every error goes to
    stderr. Safety: the server's delete guard decides when the run begins: a plan that deletes
    every enclave, or more enclaves and partitions than the limit (each counted, an enclave's
    own partitions included), does not apply (exit 2) and waits for `nclav runs approve ID`,
    unless you pass --allow-delete.

    Exit codes: 0 applied, 1 the run failed (errors printed), 2 invalid tree or refused plan,
    3 server unreachable or token refused.

    \b
    Example:
      nclav apply ./enclaves
      nclav apply ./enclaves --no-wait            # start it; follow with `nclav runs show`
      nclav apply ./enclaves --output json --no-progress > report.json
    """
    from nclav.cli.render import error_lines, run_summary

    api = client()
    digest, plan = prepare(api, directory, allow_delete=allow_delete)
    changes = plan.get("changes") or []
    limit = plan.get("max_deletes")
    server_limit = limit if isinstance(limit, int) else None
    report: dict[str, Any] = {
        "bundle": digest,
        "changes": changes,
        "dry_run": False,
        "errors": [],
        "run": None,
    }
    if not changes:
        if output == "json":
            print_json(report)
        else:
            out("No changes detected.")
        return
    body: dict[str, Any] = {"bundle": digest}
    if max_deletes is not None:
        body["max_deletes"] = max_deletes
    if allow_delete:
        body["allow_delete"] = True
    run = api.post("/reconcile", body, headers={"X-Nclav-Trigger": "cli"})
    if run.get("run", False) is None:  # the server found nothing to do after all
        if output == "json":
            print_json({**report, "changes": []})
        else:
            out("No changes detected.")
        return
    refuse_if_awaiting(run, directory, server_limit)
    if output == "text":
        print_changes(changes)  # the plan first, as it is being applied
    run_id = str(run.get("id") or run.get("run_id"))
    if run.get("changes") not in (None, 0, len(changes)):
        err(
            f"Warning: the server planned {run.get('changes')} change(s), the preview showed "
            f"{len(changes)}: its state changed in between."
        )
    if not wait:
        report["run"] = run
        if output == "json":
            print_json(report)
        else:
            out(f"Run {run_id} started with {len(changes)} change(s).")
            err(f"Follow it with: nclav runs show {run_id} --follow")
        return
    from nclav.cli.follow import follow_run, make_progress

    final = follow_run(api, run_id, make_progress(no_progress), timeout_s=timeout)
    refuse_if_awaiting(final, directory, server_limit)  # it waited behind others, then stopped
    errors = [str(e) for e in final.get("errors") or []]
    failed = bool(errors) or final.get("status") != "succeeded"
    report.update(errors=errors, run=final)
    if output == "json":
        print_json(report)
    else:
        out(run_summary(final))
        if not failed:
            skipped = sum(1 for s in final.get("steps") or [] if s.get("status") == "skipped")
            tail = f"; {skipped} skipped (nothing upstream changed)" if skipped else ""
            out(f"{len(changes) - skipped} change(s) applied{tail}.")
        if errors:
            err()
            for line in error_lines(errors):
                err(style(line, fg="red", err=True) if line.startswith("  !") else line)
    if failed:
        raise SystemExit(1)


__all__ = ["apply", "diff", "pack", "refuse_if_awaiting", "upload"]
