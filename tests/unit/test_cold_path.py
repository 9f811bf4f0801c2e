"""What a cold API function builds for its first request: no more than that request needs."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

from engine_fakes import SyncQueue

from nclav.api.http import ApiRequest
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.ports import ManualClock
from nclav.runtime.compose import compose
from nclav.runtime.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from nclav.service import Service


def test_the_router_loads_no_response_models_until_the_openapi_document_is_asked_for() -> None:
    code = "import sys, nclav.api, nclav.api.routes; print('nclav.api.responses' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _request(method: str, path: str) -> ApiRequest:
    return ApiRequest.build(method, path, headers={"authorization": "Bearer t"}, body=b"")


def test_the_git_source_is_built_by_its_first_request_not_by_the_router(tmp_path: Path) -> None:
    built: list[Service] = []

    def no_git_source(service: Service) -> Any:
        built.append(service)
        return None  # e.g. its webhook secret cannot be read

    clock = ManualClock()
    composition = compose(
        Settings(workspaces=tmp_path / "ws"),
        store=InMemoryStateStore(),
        queue=SyncQueue(clock),
        blobs=DirectoryBlobStore(tmp_path / "blobs"),
        clock=clock,
        drivers={},
        token="t",
        git=no_git_source,
    )
    router = composition.router
    assert router.dispatch(_request("GET", "/runs")).status == 200
    assert built == []
    answer = router.dispatch(_request("GET", "/source"))
    assert answer.status == 503, answer.body
    assert len(built) == 1
    # A runtime without a git source has no such routes at all.
    bare = compose(
        Settings(workspaces=tmp_path / "ws2"),
        store=InMemoryStateStore(),
        queue=SyncQueue(clock),
        blobs=DirectoryBlobStore(tmp_path / "blobs2"),
        clock=clock,
        drivers={},
        token="t",
    )
    assert bare.router.dispatch(_request("GET", "/source")).status == 404
