"""The Azure runtime's scenario driver: the v2 app's functions in-process over Azurite (queues,
blobs) and cosmosdb-server (state), the Functions host's queue processing stood in by
``azure_harness.HostPump``, the timer trigger as the sweeper, real terraform.

Key Vault has no emulator: the runtime's secret store is a local file store (see
``azure_harness``). A dead worker (``WorkerDied``) is a dead host: its message is neither
deleted nor put back, and comes back when its visibility timeout runs out.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from azure_harness import AzureDeployment, HostPump, functions
from runtimes import FINAL, LEASE_S, Reply, Runtime, WorkerDied

from functions_azure import bootstrap

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    import pytest
    from azure.cosmos import DatabaseProxy

    from nclav.engine import Engine
    from nclav.ports import SecretStore

VISIBILITY_S = 4.0  # a dead host's message is back after this (the host's is 10 minutes)


class AzureScenarioRuntime(Runtime):
    name = "azure"
    max_deliveries = 3  # NCLAV_MAX_RECEIVES (host.json maxDequeueCount is 6)

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        storage: str,
        cosmos: DatabaseProxy,
        cosmos_endpoint: str,
    ) -> None:
        # A raise comes back after a second, not host.json's five (the app setting override).
        monkeypatch.setenv(
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01"
        )
        self.deployment = AzureDeployment(
            monkeypatch,
            tmp_path,
            storage,
            cosmos,
            cosmos_endpoint,
            NCLAV_LEASE_S=str(LEASE_S),
            NCLAV_MAX_RECEIVES=str(self.max_deliveries),
        )
        self.pump = HostPump(self.deployment, visibility_s=VISIBILITY_S, crash=WorkerDied)

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, token: bool
    ) -> Reply:
        if token:
            reply = self.deployment.request(method, path, data or b"", headers)
        else:
            reply = self.deployment.request(method, path, data or b"", headers, token=None)
        return Reply(reply.status, reply.body)

    @property
    def secrets(self) -> SecretStore:
        return self.deployment.secrets  # Key Vault's stand-in (azure_harness)

    def wait(self, run: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.pump.drain(max(deadline - time.monotonic(), 1.0))
            found = self.run(str(run["id"]))
            if found["status"] in FINAL:
                return found
            assert time.monotonic() < deadline, f"run still {found['status']}: {found}"
            time.sleep(0.2)
            self.sweep()  # the timer trigger, run whenever the queues are empty

    def send_control(self, message: Mapping[str, Any]) -> None:
        # `az storage message put` as an operator would: base64 JSON, the terraform queue for
        # a drift check (its workers run terraform), the steps queue for every other kind.
        d = self.deployment
        queue = d.iac if message["kind"] == "drift_check" else d.steps
        d.send_raw(queue, json.dumps(dict(message)))

    def settle(self) -> None:
        self.pump.drain()

    @contextlib.contextmanager
    def another_sandbox(self) -> Iterator[None]:
        warm = bootstrap.install(None)
        self.deployment.install()  # a fresh runtime, as a cold start builds
        try:
            yield
        finally:
            self.close()  # the other sandbox's, as at the end
            bootstrap.install(warm)

    def sweep(self) -> int:
        from functions_azure.function_app import sweep

        functions()  # the app is indexed as the host does before any trigger fires
        return sweep().resent

    @property
    def engine(self) -> Engine:
        return self.deployment.runtime.engine

    def close(self) -> None:
        built = bootstrap.install(None)
        if built is not None:
            built.close()  # the loopback state backend


__all__ = ["AzureScenarioRuntime"]
