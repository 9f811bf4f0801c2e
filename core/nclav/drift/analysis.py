"""What a refresh-only plan says drifted, and a fingerprint of it.

``terraform show -json`` of a refresh-only plan lists under ``resource_drift`` every resource
whose real state no longer matches its Terraform state, with ``before`` (the state) and
``after`` (what the refresh read). The changed attributes are the top-level keys whose values
differ; their values are not kept (they may be secrets).

Outputs count too: a refresh-only plan that changes an output (``output_changes`` with an
action other than ``no-op``) means the outputs in the state, the ones nclav hands to other
enclaves, no longer match the resources. They are reported as ``output.<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.hashing import digest
from nclav.records import ResourceDrift

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def drifted_resources(plan: Mapping[str, object]) -> tuple[ResourceDrift, ...]:
    """The plan's ``resource_drift`` entries, sorted by address."""
    entries = plan.get("resource_drift")
    found: list[ResourceDrift] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            continue
        change = entry.get("change")
        change = change if isinstance(change, dict) else {}
        actions = change.get("actions")
        attributes = _changed(change.get("before"), change.get("after"))
        found.append(
            ResourceDrift(
                address=entry["address"],
                actions=tuple(str(a) for a in actions) if isinstance(actions, list) else (),
                attributes=attributes,
                values_digest=_values_digest(change, attributes),
            )
        )
    outputs = plan.get("output_changes")
    for name, change in outputs.items() if isinstance(outputs, dict) else ():
        actions = change.get("actions") if isinstance(change, dict) else None
        if isinstance(actions, list) and actions and actions != ["no-op"]:
            found.append(
                ResourceDrift(
                    address=f"output.{name}",
                    actions=tuple(str(a) for a in actions),
                    attributes=("value",),
                    values_digest=digest(
                        None if change.get("after_sensitive") else change.get("after")
                    ),
                )
            )
    return tuple(sorted(found, key=lambda r: r.address))


def _changed(before: object, after: object) -> tuple[str, ...]:
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ()  # created or deleted outside Terraform: the whole resource changed
    keys = set(before) | set(after)
    return tuple(sorted(k for k in keys if before.get(k) != after.get(k)))


def _values_digest(change: Mapping[str, object], attributes: tuple[str, ...]) -> str:
    """A hash of the changed attributes' new values, leaving out those marked sensitive (a
    sensitive attribute counts by its name only: its value never reaches a hash)."""
    after = change.get("after")
    after = after if isinstance(after, dict) else {}
    sensitive = change.get("after_sensitive")
    hidden = sensitive if isinstance(sensitive, dict) else {}
    shown = {a: after.get(a) for a in attributes if not hidden.get(a)}
    return digest(shown)


def fingerprint(drift: Iterable[ResourceDrift]) -> str | None:
    """A hash of the drifted addresses, actions, attributes and their new values; ``None``
    when nothing drifted.

    An acknowledgement names it: the same drift found again keeps its fingerprint, other
    drift (another resource, another attribute, another value) gets another one.
    """
    entries = [[r.address, list(r.actions), list(r.attributes), r.values_digest] for r in drift]
    return digest(sorted(entries)) if entries else None


__all__ = ["drifted_resources", "fingerprint"]
