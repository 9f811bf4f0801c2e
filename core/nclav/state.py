"""Applied state: what nclav last did to each enclave and partition.

The documents keep the original's shapes (``EnclaveState``, ``PartitionState``,
``ResourceMeta``) and add fields only: the hashes that make planning a pure comparison
(``inputs_hash`` of the resolved inputs, ``export_hashes``, ``import_hashes``) and the driver's
``context_vars`` (the ``nclav_*`` template values of the enclave).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nclav.model import Cloud, EnclaveConfig, PartitionConfig

Handle = dict[str, Any]


def handle_of(handle: Handle | None, driver: str, kind: str) -> Handle | None:
    """``handle`` when the driver named ``driver`` wrote it for a ``kind`` ("enclave",
    "partition", "export", "import"), else None: a driver acts only on its own handles."""
    if handle and handle.get("driver") == driver and handle.get("kind") == kind:
        return handle
    return None


class Status(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    UPDATING = "updating"
    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LastError(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    message: str
    occurred_at: str


class ResourceMeta(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    status: Status = Status.PENDING
    created_at: str | None = None
    updated_at: str | None = None
    last_seen_at: str | None = None
    last_error: LastError | None = None
    desired_hash: str | None = None
    generation: int = 0

    def started(self, status: Status) -> ResourceMeta:
        return self.model_copy(update={"status": status})

    def active(self, desired_hash: str, now: str | None = None) -> ResourceMeta:
        now = now or utc_now()
        return self.model_copy(
            update={
                "status": Status.ACTIVE,
                "created_at": self.created_at or now,
                "updated_at": now,
                "last_error": None,
                "desired_hash": desired_hash,
                "generation": self.generation + 1,
            }
        )

    def failed(self, message: str, now: str | None = None) -> ResourceMeta:
        return self.model_copy(
            update={
                "status": Status.ERROR,
                "last_error": LastError(message=message, occurred_at=now or utc_now()),
                "generation": self.generation + 1,
            }
        )


class PartitionState(BaseModel):
    """One partition as nclav last worked on it.

    ``desired``, ``bundle`` and ``started_inputs`` are recorded when an apply STARTS, not when
    it succeeds: terraform may create resources and then fail, and the teardown of whatever it
    left must run ``terraform destroy`` with the configuration that produced that state.
    ``bundle`` is the digest of the content-addressed bundle holding the partition's files
    (``None`` for records written before it was kept); ``started_inputs`` are the resolved
    inputs the apply was given (the variables ``terraform destroy`` needs again).
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    desired: PartitionConfig | None = None
    bundle: str | None = None
    started_inputs: dict[str, str] = Field(default_factory=dict)
    meta: ResourceMeta = Field(default_factory=ResourceMeta)
    partition_handle: Handle | None = None
    resolved_outputs: dict[str, str] = Field(default_factory=dict)
    inputs_hash: str | None = None


class EnclaveState(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    enclave_id: str
    desired: EnclaveConfig | None = None
    resolved_cloud: Cloud | None = None
    meta: ResourceMeta = Field(default_factory=ResourceMeta)
    enclave_handle: Handle | None = None
    context_vars: dict[str, str] = Field(default_factory=dict)
    partitions: dict[str, PartitionState] = Field(default_factory=dict)
    export_handles: dict[str, Handle] = Field(default_factory=dict)
    import_handles: dict[str, Handle] = Field(default_factory=dict)
    export_hashes: dict[str, str] = Field(default_factory=dict)
    import_hashes: dict[str, str] = Field(default_factory=dict)


__all__ = [
    "EnclaveState",
    "Handle",
    "handle_of",
    "LastError",
    "PartitionState",
    "ResourceMeta",
    "Status",
    "utc_now",
]
