"""``nclav drift``: drift status of every partition (``GET /drift``), ``drift check`` and
``drift ack`` of one."""

from __future__ import annotations

from typing import Any

import click

from nclav.cli.common import EXIT_FAILED, client, global_options, out, output_option, print_json


@click.group(invoke_without_command=True, short_help="Drift of every partition; check, ack.")
@click.option("--enclave", "enclave", metavar="ID", help="Only the partitions of this enclave.")
@output_option("text", "json")
@global_options
@click.pass_context
def drift(ctx: click.Context, enclave: str | None, output: str) -> None:
    """Show each partition's drift: whether what Terraform manages was changed outside it,
    from the last scheduled or requested check.

    Exits 1 when a partition has drifted and nobody acknowledged it (for CI), 0 otherwise.

    \b
    Example:
      nclav drift
      nclav drift --enclave product-a-dev --output json | jq '.partitions[].status'
      nclav drift check product-a-dev db
      nclav drift ack product-a-dev db
    """
    if ctx.invoked_subcommand is not None:
        return
    from nclav.cli.render import drift_lines

    doc = client().get("/drift", query={"enclave": enclave})
    if output == "json":
        print_json(doc)
    else:
        for line in drift_lines(doc):
            out(line)
    if doc.get("counts", {}).get("drifted", 0):
        ctx.exit(EXIT_FAILED)


def _path(enclave_id: str, partition_id: str, action: str) -> str:
    from nclav.cli.client import seg

    return f"/enclaves/{seg(enclave_id)}/partitions/{seg(partition_id)}/drift/{action}"


@drift.command("check")
@click.argument("enclave_id")
@click.argument("partition_id")
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=300,
    show_default=True,
    help="Seconds to wait for the outcome (0: only queue the check).",
)
@output_option("text", "json")
@global_options
@click.pass_context
def drift_check(
    ctx: click.Context, enclave_id: str, partition_id: str, wait: float, output: str
) -> None:
    """Check one partition's drift now (the check runs on the server's workers).

    Exits 1 when it drifted (and is not acknowledged) or the check failed.

    \b
    Example:
      nclav drift check product-a-dev db
      nclav drift check product-a-dev db --wait 0
    """
    from nclav.cli.render import drift_detail

    response = client().request(
        "POST",
        _path(enclave_id, partition_id, "check"),
        query={"wait": wait},
        timeout_s=wait + 60,
    )
    doc: dict[str, Any] = response.json()
    if output == "json":
        print_json(doc)
    elif response.status == 202:
        out(f"Drift check of {enclave_id}/{partition_id} queued; see `nclav drift`.")
    else:
        for line in drift_detail(doc):
            out(line)
    if response.status == 200 and doc.get("status") in ("drifted", "check_failed"):
        ctx.exit(EXIT_FAILED)


@drift.command("ack")
@click.argument("enclave_id")
@click.argument("partition_id")
@output_option("text", "json")
@global_options
def drift_ack(enclave_id: str, partition_id: str, output: str) -> None:
    """Acknowledge a partition's drift as it was found: it reads in sync (acknowledged) until
    a check finds different drift.

    \b
    Example:
      nclav drift ack product-a-dev db
    """
    doc = client().request("POST", _path(enclave_id, partition_id, "ack")).json()
    if output == "json":
        print_json(doc)
    else:
        count = len(doc.get("resource_drift") or [])
        out(f"Acknowledged the drift of {enclave_id}/{partition_id} ({count} resource(s)).")


__all__ = ["drift"]
