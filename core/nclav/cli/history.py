"""Run history: ``runs``, ``runs show ID``, ``iac runs ENC PART``, ``iac logs ENC PART [RUN]``."""

from __future__ import annotations

import sys
from typing import Any

import click

from nclav.cli.common import (
    EXIT_INTERRUPTED,
    CliError,
    InvalidError,
    client,
    err,
    global_options,
    out,
    output_option,
    print_json,
    style,
)


@click.group(invoke_without_command=True, short_help="List runs; `runs show ID` for one.")
@click.option(
    "--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="How many runs."
)
@output_option("text", "json")
@global_options
@click.pass_context
def runs(ctx: click.Context, limit: int, output: str) -> None:
    """List reconcile and destroy runs, newest first (or `runs show ID` for one).

    A run the server's delete guard stopped is `awaiting_approval`: see its plan with
    `runs show ID`, then `runs approve ID` or `runs cancel ID`. A failed (or cancelled) run
    is tried again with `runs retry ID`.

    \b
    Example:
      nclav runs
      nclav runs --limit 5 --output json | jq '.[].status'
    """
    if ctx.invoked_subcommand is not None:
        return
    from nclav.cli.render import runs_table

    found = client().get("/runs", query={"limit": limit})
    if output == "json":
        print_json(found)
    elif not found:
        out("No runs yet.")
    else:
        for line in runs_table(found):
            out(line)


@runs.command("show")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="While the run is in flight, follow it.")
@click.option("--no-progress", is_flag=True, help="Plain progress lines even on a terminal.")
@output_option("text", "json")
@global_options
def runs_show(run_id: str, follow: bool, no_progress: bool, output: str) -> None:
    """Show one run: its status, each step and every error.

    Exits 1 when the run failed, so a script can wait on a run started with
    `apply --no-wait`: `nclav runs show ID --follow`.

    \b
    Example:
      nclav runs show 3f6d9e1a-c4b2-4d91-a8f0-123456789abc
      nclav runs show 3f6d9e1a-c4b2-4d91-a8f0-123456789abc --follow
    """
    from nclav.cli.client import seg
    from nclav.cli.render import error_lines, run_detail

    api = client()
    if follow:
        from nclav.cli.follow import follow_run, make_progress

        run: dict[str, Any] = follow_run(api, run_id, make_progress(no_progress))
    else:
        run = api.get(f"/runs/{seg(run_id)}")
    errors = [str(e) for e in run.get("errors") or []]
    if output == "json":
        print_json(run)
    else:
        for line in run_detail(run):
            out(line)
        for line in approval_lines(run):
            out(line)
        if errors:
            err()
            for line in error_lines(errors):
                err(style(line, fg="red", err=True) if line.startswith("  !") else line)
    if errors or run.get("status") == "failed":
        raise SystemExit(1)


def approval_lines(run: dict[str, Any]) -> list[str]:
    """What an awaiting run asks, and how to answer it."""
    approval = run.get("approval") or {}
    if run.get("status") != "awaiting_approval" or not approval:
        return []
    run_id = run.get("id")
    lines = [f"Awaiting approval: {approval.get('reason')}"]
    lines += [f"  - {g}" for g in approval.get("deletions") or []]
    from nclav.cli.render import change_line

    changes = approval.get("changes") or []
    if changes:
        lines.append("Plan:")
        lines += [change_line(c) for c in changes]
    lines.append(f"Approve it with `nclav runs approve {run_id}`, or `nclav runs cancel {run_id}`.")
    return lines


@runs.command("approve")
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Follow the run to its end once approved.")
@click.option("--no-progress", is_flag=True, help="Plain progress lines even on a terminal.")
@output_option("text", "json")
@global_options
def runs_approve(run_id: str, wait: bool, no_progress: bool, output: str) -> None:
    """Approve a run the delete guard stopped, as it was planned.

    The server plans it again: if the plan is still the one shown, the run begins; if it
    changed meanwhile, nothing runs, the run shows the new plan and this exits 2 (look at it
    with `runs show ID`, then approve again). Exits 1 when, with --wait, the run failed.

    \b
    Example:
      nclav runs approve 3f6d9e1a-c4b2-4d91-a8f0-123456789abc --wait
    """
    from nclav.cli.client import ApiError, seg
    from nclav.cli.render import error_lines, run_summary

    api = client()
    try:
        run: dict[str, Any] = api.post(f"/runs/{seg(run_id)}/approve", {})
    except ApiError as exc:
        if exc.status == 409:
            raise InvalidError(
                f"run {run_id} not approved: {exc.server_message}",
                hint=f"See it with: nclav runs show {run_id}",
            ) from None
        raise
    if wait:
        from nclav.cli.follow import follow_run, make_progress

        run = follow_run(api, run_id, make_progress(no_progress))
    errors = [str(e) for e in run.get("errors") or []]
    if output == "json":
        print_json(run)
    elif wait:
        out(run_summary(run))
        if errors:
            err()
            for line in error_lines(errors):
                err(style(line, fg="red", err=True) if line.startswith("  !") else line)
    else:
        out(f"Run {run_id} approved: {run.get('status')}.")
        err(f"Follow it with: nclav runs show {run_id} --follow")
    if errors or run.get("status") == "failed":
        raise SystemExit(1)


@runs.command("cancel")
@click.argument("run_id")
@output_option("text", "json")
@global_options
def runs_cancel(run_id: str, output: str) -> None:
    """Cancel a run that is queued or awaiting approval (nothing of it has run).

    \b
    Example:
      nclav runs cancel 3f6d9e1a-c4b2-4d91-a8f0-123456789abc
    """
    from nclav.cli.client import ApiError, seg

    api = client()
    try:
        run: dict[str, Any] = api.post(f"/runs/{seg(run_id)}/cancel", {})
    except ApiError as exc:
        if exc.status == 409:
            raise InvalidError(f"run {run_id} not cancelled: {exc.server_message}") from None
        raise
    if output == "json":
        print_json(run)
    else:
        out(f"Run {run_id} cancelled.")


@runs.command("retry")
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Follow the new run to its end.")
@click.option("--no-progress", is_flag=True, help="Plain progress lines even on a terminal.")
@output_option("text", "json")
@global_options
def runs_retry(run_id: str, wait: bool, no_progress: bool, output: str) -> None:
    """Retry a failed or cancelled run: a new run of the same tree (or teardown).

    The new run (its `retry_of` names this one) is planned when it begins, against the
    applied state of then: what the earlier try applied is not done again, its failed and
    blocked steps run again, and the delete guard and approvals apply as to any run. It is
    refused (exit 2) when a newer run has changed the same enclaves: reconcile the current
    tree instead. Exits 1 when, with --wait, the new run failed.

    \b
    Example:
      nclav runs retry 3f6d9e1a-c4b2-4d91-a8f0-123456789abc --wait
    """
    from nclav.cli.client import ApiError, seg
    from nclav.cli.render import error_lines, run_summary

    api = client()
    try:
        run: dict[str, Any] = api.post(f"/runs/{seg(run_id)}/retry", {})
    except ApiError as exc:
        if exc.status == 409:
            raise InvalidError(
                f"run {run_id} not retried: {exc.server_message}",
                hint=f"See it with: nclav runs show {run_id}",
            ) from None
        raise
    new_id = str(run.get("id"))
    if wait:
        from nclav.cli.follow import follow_run, make_progress

        run = follow_run(api, new_id, make_progress(no_progress))
    errors = [str(e) for e in run.get("errors") or []]
    if output == "json":
        print_json(run)
    elif wait:
        out(run_summary(run))
        for line in approval_lines(run):
            err(line)
        if errors:
            err()
            for line in error_lines(errors):
                err(style(line, fg="red", err=True) if line.startswith("  !") else line)
    else:
        out(
            f"Run {run_id} retried as run {new_id} (try {run.get('attempt')}): {run.get('status')}."
        )
        err(f"Follow it with: nclav runs show {new_id} --follow")
    if errors or run.get("status") == "failed":
        raise SystemExit(1)


@click.group(short_help="IaC (Terraform/OpenTofu) runs and logs.")
def iac() -> None:
    """Terraform / OpenTofu runs of a partition: their history and logs.

    \b
    Example:
      nclav iac runs product-a-dev db
      nclav iac logs product-a-dev db --follow
    """


@iac.command("runs")
@click.argument("enclave_id")
@click.argument("partition_id")
@output_option("text", "json")
@global_options
def iac_runs(enclave_id: str, partition_id: str, output: str) -> None:
    """List a partition's IaC runs (init/apply/destroy), newest first.

    \b
    Example:
      nclav iac runs product-a-dev db
    """
    from nclav.cli.client import seg
    from nclav.cli.render import iac_runs_table

    found = client().get(f"/enclaves/{seg(enclave_id)}/partitions/{seg(partition_id)}/iac/runs")
    if output == "json":
        print_json(found)
    elif not found:
        out(f"No IaC runs found for {enclave_id}/{partition_id}")
    else:
        for line in iac_runs_table(found):
            out(line)


@iac.command("logs")
@click.argument("enclave_id")
@click.argument("partition_id")
@click.argument("run_id", required=False)
@click.option(
    "--follow", "-f", is_flag=True, help="While the run is in flight, print the log as it grows."
)
@output_option("text", "json")
@global_options
def iac_logs(
    enclave_id: str, partition_id: str, run_id: str | None, follow: bool, output: str
) -> None:
    """Print the full log of an IaC run (the newest unless RUN_ID is given).

    A run still in flight shows its log so far. With --follow, keeps printing as it grows
    (server-sent events where the server streams them, else polling from the byte offset
    already shown) and stops when the run ends.

    \b
    Example:
      nclav iac logs product-a-dev db
      nclav iac logs product-a-dev db 3f6d9e1a-c4b2-4d91-a8f0-123456789abc
      nclav iac logs product-a-dev db --follow
    """
    from nclav.cli.client import ApiError, seg
    from nclav.cli.follow import follow_log
    from nclav.cli.render import iac_log_header

    api = client()
    base = f"/enclaves/{seg(enclave_id)}/partitions/{seg(partition_id)}/iac/runs"
    try:
        run: dict[str, Any] = api.get(f"{base}/{seg(run_id) if run_id else 'latest'}")
    except ApiError as exc:
        if exc.status == 404:
            which = f"IaC run {run_id}" if run_id else "IaC run"
            raise CliError(f"No {which} found for {enclave_id}/{partition_id}") from None
        raise
    log_path = f"{base}/{seg(str(run['id']))}/log"
    # The log so far, while the run is still going too (lines not yet shipped included when
    # the server runs terraform itself).
    response = api.request("GET", log_path, headers={"Accept": "text/plain"})
    status = response.headers.get("X-Nclav-Run-Status") or run.get("status")
    complete = response.headers.get("X-Nclav-Complete", "true") == "true"
    shown = int(response.headers.get("X-Nclav-Next-Offset") or len(response.body))
    if output == "json":
        log = bytearray(response.body)
        if follow and not complete:
            status = follow_log(api, log_path, shown, log.extend)
            run = api.get(f"{base}/{seg(str(run['id']))}")
        print_json({**run, "log": bytes(log).decode("utf-8", "replace")})
        return
    for line in iac_log_header(run):
        out(line)
    tail = [response.body[-1:] if response.body else b"\n"]

    def write(data: bytes) -> None:
        if data:
            _write(data)
            tail[0] = data[-1:]

    write(response.body)
    try:
        if follow and not complete:
            status = follow_log(api, log_path, shown, write)
    except KeyboardInterrupt:
        if tail[0] != b"\n":
            out()
        err("Stopped following the log.")
        raise SystemExit(EXIT_INTERRUPTED) from None
    if tail[0] != b"\n":
        out()
    if follow:
        err(f"IaC run {run['id']} ended: {status}")


def _write(data: bytes) -> None:
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(data)
        buffer.flush()
    else:  # pragma: no cover - a text-only stream
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


__all__ = ["iac", "runs"]
