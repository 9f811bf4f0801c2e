"""``nclav destroy``: the imperative escape hatch (enclaves, all of them, or one partition)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from nclav.cli.common import (
    CliError,
    InvalidError,
    client,
    err,
    global_options,
    is_tty,
    out,
    output_option,
    print_json,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nclav.cli.client import Client


def teardown_order(enclaves: Sequence[dict[str, Any]], ids: Sequence[str]) -> list[str]:
    """``ids`` with every importer before the enclaves it imports from (first-given first)."""
    chosen = list(dict.fromkeys(ids))
    imports: dict[str, set[str]] = {eid: set() for eid in chosen}
    for state in enclaves:
        eid = state.get("enclave_id")
        if eid not in imports:
            continue
        desired = state.get("desired") or {}
        found = [*(desired.get("imports") or [])]
        for part in desired.get("partitions") or []:
            found += part.get("imports") or []
        imports[eid] = {str(i.get("from")) for i in found} & set(chosen) - {eid}
    importers = {eid: {o for o in chosen if eid in imports[o]} for eid in chosen}
    order: list[str] = []
    while len(order) < len(chosen):
        ready = [e for e in chosen if e not in order and not importers[e] - set(order)]
        order.append(ready[0] if ready else next(e for e in chosen if e not in order))
    return order


# What deleting an enclave's environment means on each cloud (cloud-drivers-spec: GCP 2.x,
# Azure 3.5, AWS 4.5): only the clouds that keep something say so.
_ENVIRONMENT = {
    "local": "delete its local environment",
    "gcp": "delete its GCP project (held 30 days by GCP, and restorable during that time)",
    "azure": "cancel its Azure subscription (its resources linger about 90 days; final "
    "deletion is manual)",
    "aws": "close its AWS account (AWS keeps a closed account suspended for 90 days; "
    "account closures are limited per rolling 30 days)",
}


def destroy_prompt(enclave_id: str, cloud: str | None) -> list[str]:
    """The warning shown before destroying an enclave, saying what its cloud keeps."""
    what = _ENVIRONMENT.get(str(cloud), "delete its cloud environment")
    return [f"This will destroy enclave '{enclave_id}' and {what}."]


def _cloud_of(api: Client, enclaves: Sequence[dict[str, Any]], enclave_id: str) -> str | None:
    """The enclave's resolved cloud, for the prompt; None when the server does not say."""
    from nclav.cli.client import ApiError, seg

    found = next((e for e in enclaves if e.get("enclave_id") == enclave_id), None)
    if found is None:
        try:
            found = api.get(f"/enclaves/{seg(enclave_id)}")
        except ApiError:  # the DELETE reports a missing enclave
            return None
    cloud = (found or {}).get("resolved_cloud")
    return str(cloud) if cloud else None


def _confirm(lines: Sequence[str], expected: str, yes: bool, what: str) -> bool:
    """On a terminal, ask to type ``expected``; elsewhere only --yes confirms."""
    if yes:
        return True
    if not is_tty(sys.stdin):
        raise InvalidError(
            "refusing to destroy without confirmation: not running on a terminal",
            hint="Pass --yes to confirm.",
        )
    for line in lines:
        err(line)
    answer = click.prompt(
        f"  Type '{expected}' to confirm", default="", show_default=False, err=True
    )
    if answer.strip() != expected:
        err(f"aborted: {what} not destroyed")
        return False
    return True


def _run(
    api: Client,
    path: str,
    what: str,
    wait: bool,
    no_progress: bool,
    output: str,
    query: dict[str, object] | None = None,
) -> dict[str, Any]:
    """One DELETE and (with --wait) its run followed to the end; a result for the report.

    Every destroy was confirmed (typed, or --yes) before it is sent, so it lifts the server's
    delete guard (``allow_delete``) for its run.
    """
    from nclav.cli.client import ApiError
    from nclav.cli.follow import follow_run, make_progress
    from nclav.cli.render import error_lines

    result: dict[str, Any] = {"target": what, "status": "failed", "errors": [], "run": None}
    if output == "text":
        err(f"Destroying {what}\u2026")
    try:
        run = api.delete(path, query={"allow_delete": "true", **(query or {})})
    except ApiError as exc:
        result["errors"] = [exc.server_message]
        err(f"Failed to destroy {what}: {exc.message}")
        return result
    run_id = str(run.get("id") or run.get("run_id"))
    if not wait:
        result.update(status="started", run=run)
        if output == "text":
            out(f"Destroying {what}: run {run_id} started.")
        return result
    final = follow_run(api, run_id, make_progress(no_progress))
    errors = [str(e) for e in final.get("errors") or []]
    ok = final.get("status") == "succeeded" and not errors
    result.update(status="succeeded" if ok else "failed", errors=errors, run=final)
    if output == "text":
        if ok:
            out(f"Destroyed {what} (run {run_id}).")
        else:
            err(f"Failed to destroy {what} (run {run_id}):")
            for line in error_lines(errors or [f"run ended {final.get('status')}"]):
                err(line)
    return result


@click.command(short_help="Tear down enclaves, all of them, or one partition.")
@click.argument("enclave_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Destroy every enclave the server holds.")
@click.option("--partition", metavar="P", help="Destroy only partition P of the one enclave given.")
@click.option(
    "--resources-only",
    is_flag=True,
    help="Tear down the enclaves' partitions (their Terraform resources) and keep the "
    "enclaves themselves (account, project, network).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask; required when not on a terminal.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Follow each run to its end."
)
@click.option("--no-progress", is_flag=True, help="Plain progress lines even on a terminal.")
@output_option("text", "json")
@global_options
def destroy(
    enclave_ids: tuple[str, ...],
    all_: bool,
    partition: str | None,
    resources_only: bool,
    yes: bool,
    wait: bool,
    no_progress: bool,
    output: str,
) -> None:
    """Tear down enclaves (their partitions first) or one partition, and forget them.

    The declarative way is to remove the enclave from the tree and `apply`; this is the
    imperative escape hatch. On a terminal each destroy asks you to type the enclave (or
    partition) id, and --all asks for 'yes'; elsewhere --yes is required. Several enclaves are
    destroyed one after the other, importers before the enclaves they import from.
    Exits 1 when any destroy failed.

    \b
    Example:
      nclav destroy product-a-dev
      nclav destroy product-a-dev product-b-staging --yes
      nclav destroy --all --yes
      nclav destroy product-a-dev --partition db
      nclav destroy product-a-dev --resources-only   # keep the enclave, drop its partitions
    """
    from nclav.cli.client import seg

    if all_ and enclave_ids:
        raise click.UsageError("--all takes no enclave IDs")
    if all_ and partition:
        raise click.UsageError("--partition cannot be combined with --all")
    if partition is not None and resources_only:
        raise click.UsageError(
            "--resources-only cannot be combined with --partition (a partition destroy "
            "keeps its enclave already)"
        )
    if partition is not None and len(enclave_ids) != 1:
        raise click.UsageError("--partition requires exactly one enclave ID")
    if not all_ and not enclave_ids:
        raise click.UsageError("give the enclave IDs to destroy, or --all")
    api = client()
    results: list[dict[str, Any]] = []
    if partition is not None:
        (eid,) = enclave_ids
        what = f"partition {eid}/{partition}"
        lines = [
            f"This will destroy partition '{eid}/{partition}' and remove it from the server state.",
            "A subsequent 'apply' will re-provision it from scratch.",
        ]
        if _confirm(lines, partition, yes, f"{eid}/{partition}"):
            path = f"/enclaves/{seg(eid)}/partitions/{seg(partition)}"
            results.append(_run(api, path, what, wait, no_progress, output))
        else:
            results.append({"target": what, "status": "aborted", "errors": [], "run": None})
    else:
        ids = list(enclave_ids)
        enclaves: list[dict[str, Any]] = []
        if all_ or len(ids) > 1:
            enclaves = api.get("/enclaves")
        if all_:
            ids = [str(e.get("enclave_id")) for e in enclaves]
            if not ids:
                if output == "json":
                    print_json({"results": []})
                else:
                    out("No enclaves to destroy.")
                return
            lines = [f"This will destroy {len(ids)} enclave(s) and everything in them:"]
            lines += [f"  - {eid}" for eid in ids]
            if not _confirm(lines, "yes", yes, "enclaves"):
                raise CliError("aborted: nothing destroyed")
            yes = True  # one confirmation covers them all
        query: dict[str, object] = {"resources_only": "true"} if resources_only else {}
        for eid in teardown_order(enclaves, ids) if len(ids) > 1 else ids:
            what = f"the partitions of enclave {eid}" if resources_only else f"enclave {eid}"
            lines = destroy_prompt(eid, None if yes else _cloud_of(api, enclaves, eid))
            if resources_only:
                lines = [
                    f"This will destroy every partition of enclave '{eid}' (their Terraform "
                    "resources); the enclave and its environment stay."
                ]
            if _confirm(lines, eid, yes, eid):
                path = f"/enclaves/{seg(eid)}"
                results.append(_run(api, path, what, wait, no_progress, output, query))
            else:
                results.append({"target": what, "status": "aborted", "errors": [], "run": None})
    if output == "json":
        print_json({"results": results})
    failed = [r for r in results if r["status"] in ("failed", "aborted")]
    if failed:
        raise CliError(
            "one or more destroys failed"
            if len(results) > 1
            else f"{failed[0]['target']} was not destroyed"
        )


__all__ = ["destroy", "destroy_prompt", "teardown_order"]
