"""``nclav events``: the server's audit log (``GET /events``)."""

from __future__ import annotations

import click

from nclav.cli.common import client, global_options, out, output_option, print_json


@click.command(short_help="Show the audit log, oldest first.")
@click.option("--enclave", "enclave", metavar="ID", help="Only the events of this enclave.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="How many of the newest events.",
)
@output_option("text", "json")
@global_options
def events(enclave: str | None, limit: int, output: str) -> None:
    """Show the audit log: the newest events (runs started and completed, enclaves and
    partitions provisioned, deleted or failed, exports and imports wired), oldest first.

    \b
    Example:
      nclav events
      nclav events --enclave product-a-dev --limit 20
      nclav events --output json | jq '.[] | select(.kind == "PartitionError")'
    """
    from nclav.cli.render import events_table

    found = client().get("/events", query={"enclave_id": enclave, "limit": limit})
    if output == "json":
        print_json(found)
    elif not found:
        out("No events yet." if enclave is None else f"No events for enclave {enclave}.")
    else:
        for line in events_table(found):
            out(line)


__all__ = ["events"]
