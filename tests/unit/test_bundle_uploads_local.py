"""``POST /bundles/uploads`` on the local server: its directory blob store takes no signed
uploads (and needs none: ``POST /bundles`` takes 64 MiB), so the route answers 404, which the
CLI reads as "post it directly" (tests/aws/test_infra_bundle_upload.py covers S3)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from nclav.api.auth import TokenAuth
from nclav.api.http import ApiRequest
from nclav.api.routes import build_router
from nclav.iac.state_backend import TerraformStateBackend
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.model import Cloud
from nclav.ports import ManualClock, SignedUploads
from nclav.service import Bundles, Service

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "a" * 64


def test_the_local_server_answers_not_needed(tmp_path: Path) -> None:
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    assert not isinstance(blobs, SignedUploads)
    service = Service(store, Bundles(blobs, Cloud.LOCAL), None, {}, Cloud.LOCAL)  # type: ignore[arg-type]
    router = build_router(
        service, TerraformStateBackend(store, blobs, ManualClock()), blobs, TokenAuth(TOKEN)
    )
    body = json.dumps({"sha256": "0" * 64, "size": 10}).encode()
    request = ApiRequest.build(
        "POST",
        "/bundles/uploads",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        body=body,
    )
    response = router.dispatch(request)
    assert response.status == 404
    assert "POST /bundles" in json.loads(response.body)["error"]["message"]
