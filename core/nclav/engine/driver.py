"""The Driver port (what a cloud does for an enclave), the OrphanScanner port beside it, and
the local driver.

A driver call is idempotent: given the handle it returned before, it finds what it created
instead of creating it twice, because delivery is at least once.

An orphan is something nclav made (it carries nclav's tags, or nclav holds its Terraform
state) that no applied partition owns any more: a leak to clean up by hand. ``GET /orphans``
asks every registered driver that is also an ``OrphanScanner``, and names those it could not
ask.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from nclav.model import EnclaveConfig, Export, Import, PartitionConfig
    from nclav.ports import BlobStore, StateStore
    from nclav.state import EnclaveState, Handle


class Orphan(BaseModel):
    """One leaked resource, as a driver found it."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    cloud: Cloud
    resource_id: str  # an ARN, a resource id, or what nclav holds locally
    resource_type: str  # e.g. "ec2:security-group", "terraform-state"
    enclave_id: str | None = None
    partition_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)  # the nclav tags found on it
    reason: str  # why it is an orphan, for a person to judge

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")


@runtime_checkable
class OrphanScanner(Protocol):
    """Finds what nclav made in one cloud that no applied partition owns."""

    cloud: Cloud

    def list_orphans(self, applied: Sequence[EnclaveState]) -> list[Orphan]:
        """Orphans, given every enclave nclav holds applied (of any cloud: a scanner picks
        its own). Raises when the cloud cannot be asked (credentials, network)."""
        ...


class Driver(Protocol):
    cloud: Cloud

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        """Create or update the enclave; return its handle and its template context."""
        ...

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None: ...

    def provision_partition(
        self,
        enclave: EnclaveConfig,
        partition: PartitionConfig,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> Handle:
        """The partition's identity (the role / service account terraform runs as).

        ``enclave_handle`` is the enclave's applied handle: partition steps may run where the
        enclave's cloud account cannot be looked up (AWS: the terraform function never calls
        Organizations), so whatever locates the enclave comes from there."""
        ...

    def teardown_partition(
        self,
        enclave_id: str,
        partition_id: str,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> None: ...

    def provision_export(
        self, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
    ) -> Handle: ...

    def teardown_export(self, enclave_id: str, name: str, handle: Handle | None) -> None: ...

    def provision_import(
        self, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
    ) -> Handle: ...

    def teardown_import(self, enclave_id: str, alias: str, handle: Handle | None) -> None: ...

    def auth_env(
        self, enclave_handle: Handle | None, partition_handle: Handle | None
    ) -> dict[str, str]:
        """Credentials terraform runs with, as environment variables (never written to disk)."""
        ...


class TerraformHoldings:
    """What nclav itself holds per partition: a current Terraform state (state store pointer
    and its versions in the blob store) and a workspace directory
    (``<workspaces>/<enclave>/<partition>``)."""

    def __init__(self, store: StateStore, blobs: BlobStore, workspaces: Path | None) -> None:
        self.store = store
        self.blobs = blobs
        self.workspaces = workspaces

    def states(self) -> dict[tuple[str, str], int | None]:
        """(enclave, partition) -> resources in the current state, for every partition with a
        current state version; None when the state cannot be read as Terraform's JSON."""
        held = {tuple(k.split("/")[1:3]) for k in self.blobs.list("tfstate/") if k.count("/") >= 3}
        found: dict[tuple[str, str], int | None] = {}
        for enclave_id, partition_id in sorted(held):
            pointer = self.store.get_tf_state(f"{enclave_id}/{partition_id}")
            if pointer is not None:
                found[(enclave_id, partition_id)] = _resources(self.blobs.get(pointer))
        return found

    def workspace_dirs(self) -> list[tuple[str, str]]:
        """(enclave, partition) of every workspace directory, sorted."""
        root = self.workspaces
        if root is None or not root.is_dir():
            return []
        found = []
        for enclave in sorted(os.scandir(root), key=lambda d: d.name):
            if enclave.is_dir(follow_symlinks=False):
                for part in sorted(os.scandir(enclave.path), key=lambda d: d.name):
                    if part.is_dir(follow_symlinks=False):
                        found.append((enclave.name, part.name))
        return found


def _resources(state: bytes) -> int | None:
    """Managed resource instances a Terraform state describes (``terraform destroy`` leaves a
    state with none); None when it is not a state Terraform wrote."""
    try:
        doc = json.loads(state)
        return sum(
            len(r.get("instances") or [])
            for r in doc.get("resources") or []
            if r.get("mode", "managed") == "managed"
        )
    except (ValueError, AttributeError, TypeError):
        return None


class LocalDriver:
    """No cloud, no credentials: deterministic handles, empty project id and region.

    With ``holdings`` it is also an ``OrphanScanner``, over the partitions no applied enclave
    has: a current Terraform state that still describes resources (say, left by a failed
    teardown: whatever it describes is still out there), and a workspace directory, unless
    the partition's state shows it was destroyed cleanly (an empty state)."""

    cloud = Cloud.LOCAL

    def __init__(self, holdings: TerraformHoldings | None = None) -> None:
        self.holdings = holdings

    def list_orphans(self, applied: Sequence[EnclaveState]) -> list[Orphan]:
        if self.holdings is None:
            return []
        owned = {(s.enclave_id, p) for s in applied for p in s.partitions}
        found: list[Orphan] = []
        states = self.holdings.states()
        for (enclave_id, partition_id), count in states.items():
            if (enclave_id, partition_id) not in owned and count != 0:
                what = "an unreadable state" if count is None else f"{count} resource(s)"
                found.append(
                    Orphan(
                        cloud=self.cloud,
                        resource_id=f"/terraform/state/{enclave_id}/{partition_id}",
                        resource_type="terraform-state",
                        enclave_id=enclave_id,
                        partition_id=partition_id,
                        reason=f"nclav holds a Terraform state with {what} for a partition "
                        "that no applied enclave has: they may still exist",
                    )
                )
        for enclave_id, partition_id in self.holdings.workspace_dirs():
            destroyed = states.get((enclave_id, partition_id), -1) == 0
            if (enclave_id, partition_id) not in owned and not destroyed:
                assert self.holdings.workspaces is not None
                found.append(
                    Orphan(
                        cloud=self.cloud,
                        resource_id=str(self.holdings.workspaces / enclave_id / partition_id),
                        resource_type="terraform-workspace",
                        enclave_id=enclave_id,
                        partition_id=partition_id,
                        reason="a Terraform working directory of a partition that no applied "
                        "enclave has",
                    )
                )
        return found

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        new = {"driver": "local", "kind": "enclave", "cloud": "local", "id": enclave.id}
        return new, {"nclav_project_id": "", "nclav_region": ""}

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None:
        return None

    def provision_partition(
        self,
        enclave: EnclaveConfig,
        partition: PartitionConfig,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> Handle:
        return {
            "driver": "local",
            "kind": "partition",
            "enclave_id": enclave.id,
            "partition_id": partition.id,
        }

    def teardown_partition(
        self,
        enclave_id: str,
        partition_id: str,
        handle: Handle | None,
        *,
        enclave_handle: Handle | None = None,
    ) -> None:
        return None

    def provision_export(
        self, enclave: EnclaveConfig, export: Export, outputs: Mapping[str, str]
    ) -> Handle:
        return {
            "driver": "local",
            "kind": "export",
            "enclave_id": enclave.id,
            "export_name": export.name,
            "outputs": dict(outputs),
        }

    def teardown_export(self, enclave_id: str, name: str, handle: Handle | None) -> None:
        return None

    def provision_import(
        self, enclave: EnclaveConfig, imp: Import, export_handle: Handle | None
    ) -> Handle:
        outputs = (export_handle or {}).get("outputs", {})
        return {
            "driver": "local",
            "kind": "import",
            "importer_enclave": enclave.id,
            "alias": imp.alias,
            "outputs": outputs,
        }

    def teardown_import(self, enclave_id: str, alias: str, handle: Handle | None) -> None:
        return None

    def auth_env(
        self, enclave_handle: Handle | None, partition_handle: Handle | None
    ) -> dict[str, str]:
        return {}


__all__ = ["Driver", "LocalDriver", "Orphan", "OrphanScanner", "TerraformHoldings"]
