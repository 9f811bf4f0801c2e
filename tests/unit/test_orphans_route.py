"""``GET /orphans`` asks every registered driver and names the ones it could not ask (issue 8
point 5b). The local driver and stores are real; the two other clouds stand for a cloud that
is out of reach and a driver without the port."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nclav.api.auth import TokenAuth
from nclav.api.http import ApiRequest
from nclav.api.routes import build_router
from nclav.engine.driver import LocalDriver, OrphanScanner, TerraformHoldings
from nclav.iac.state_backend import TerraformStateBackend
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.model import Cloud
from nclav.ports import ManualClock
from nclav.service import Bundles, Service
from nclav.state import EnclaveState, PartitionState

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from nclav.engine.driver import Orphan

TOKEN = "a" * 64
RESOURCE = b'{"version": 4, "resources": [{"mode": "managed", "type": "terraform_data", '
RESOURCE += b'"name": "x", "instances": [{"attributes": {}}]}]}'


class Unreachable:
    cloud = Cloud.AWS

    def list_orphans(self, applied: Sequence[EnclaveState]) -> list[Orphan]:
        raise ConnectionError("could not connect to the endpoint URL")


class NoScanner:
    cloud = Cloud.GCP


def orphans(tmp_path: Path, drivers: dict[Cloud, Any]) -> tuple[int, dict[str, Any]]:
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    holdings = TerraformHoldings(store, blobs, tmp_path / "workspaces")
    drivers = {Cloud.LOCAL: LocalDriver(holdings), **drivers}
    tf = TerraformStateBackend(store, blobs, ManualClock())
    for enclave, partition in (("kept", "db"), ("kept", "gone"), ("left", "api")):
        tf.post_state(enclave, partition, RESOURCE, None)
    tf.post_state("clean", "p", b'{"version": 4, "resources": []}', None)  # destroyed: fine
    store.put_enclave(EnclaveState(enclave_id="kept", partitions={"db": PartitionState()}), None)
    service = Service(store, Bundles(blobs, Cloud.LOCAL), None, drivers, Cloud.LOCAL)  # type: ignore[arg-type]
    router = build_router(service, tf, blobs, TokenAuth(TOKEN))
    request = ApiRequest.build("GET", "/orphans", headers={"Authorization": f"Bearer {TOKEN}"})
    response = router.dispatch(request)
    return response.status, json.loads(response.body)


def test_every_driver_is_asked_and_the_unreachable_are_named(tmp_path: Path) -> None:
    assert isinstance(LocalDriver(), OrphanScanner) and not isinstance(NoScanner(), OrphanScanner)
    status, doc = orphans(tmp_path, {Cloud.AWS: Unreachable(), Cloud.GCP: NoScanner()})
    assert status == 200
    assert [(o["enclave_id"], o["partition_id"]) for o in doc["orphans"]] == [
        ("kept", "gone"),
        ("left", "api"),
    ]
    assert doc["unavailable"] == [
        {"cloud": "aws", "error": "ConnectionError: could not connect to the endpoint URL"},
        {"cloud": "gcp", "error": "cannot list orphans"},
    ]


def test_a_local_driver_without_holdings_finds_nothing() -> None:
    assert LocalDriver().list_orphans([EnclaveState(enclave_id="x")]) == []
