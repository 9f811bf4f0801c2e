"""The Driver port (what a cloud does for an enclave) and the local driver.

A driver call is idempotent: given the handle it returned before, it finds what it created
instead of creating it twice, because delivery is at least once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.model import EnclaveConfig, Export, Import, PartitionConfig
    from nclav.state import Handle


class Driver(Protocol):
    cloud: Cloud

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        """Create or update the enclave; return its handle and its template context."""
        ...

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None: ...

    def provision_partition(
        self, enclave: EnclaveConfig, partition: PartitionConfig, handle: Handle | None
    ) -> Handle:
        """The partition's identity (the role / service account terraform runs as)."""
        ...

    def teardown_partition(
        self, enclave_id: str, partition_id: str, handle: Handle | None
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


class LocalDriver:
    """No cloud, no credentials: deterministic handles, empty project id and region."""

    cloud = Cloud.LOCAL

    def provision_enclave(
        self, enclave: EnclaveConfig, handle: Handle | None
    ) -> tuple[Handle, dict[str, str]]:
        new = {"driver": "local", "kind": "enclave", "cloud": "local", "id": enclave.id}
        return new, {"nclav_project_id": "", "nclav_region": ""}

    def teardown_enclave(self, enclave: EnclaveConfig | None, handle: Handle | None) -> None:
        return None

    def provision_partition(
        self, enclave: EnclaveConfig, partition: PartitionConfig, handle: Handle | None
    ) -> Handle:
        return {
            "driver": "local",
            "kind": "partition",
            "enclave_id": enclave.id,
            "partition_id": partition.id,
        }

    def teardown_partition(self, enclave_id: str, partition_id: str, handle: Handle | None) -> None:
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


__all__ = ["Driver", "LocalDriver"]
