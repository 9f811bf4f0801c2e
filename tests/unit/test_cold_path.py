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


_COMPOSED_GET_RUNS = """
import sys, tempfile
from pathlib import Path
import pydantic
from nclav.api.http import ApiRequest
from nclav.local import DirectoryBlobStore, InMemoryStateStore, ThreadWorkQueue
from nclav.ports import SystemClock
from nclav.runtime.compose import compose
from nclav.runtime.settings import Settings

scratch = Path(tempfile.mkdtemp())
queue = ThreadWorkQueue(lambda m: None, workers=1)
composition = compose(
    Settings(workspaces=scratch / "ws"),
    store=InMemoryStateStore(),
    queue=queue,
    blobs=DirectoryBlobStore(scratch / "blobs"),
    clock=SystemClock(),
    drivers={},
    token="t",
)
request = ApiRequest.build("GET", "/runs", headers={"authorization": "Bearer t"}, body=b"")
assert composition.router.dispatch(request).status == 200
queue.close()

def models(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from models(sub)

built = sorted(
    m.__module__ + "." + m.__qualname__
    for m in models(pydantic.BaseModel)
    if m.__module__.startswith("nclav") and m.__dict__.get("__pydantic_complete__")
)
heavy = ("yaml", "http.server", "urllib.request", "nclav.drift.worker")
loaded = [m for m in heavy if m in sys.modules]
print(built, loaded)
"""


def test_a_composed_runtimes_first_get_runs_builds_no_model_and_imports_no_parser() -> None:
    """A cloud function's cold start pays for every import and every pydantic schema built
    before its first answer: ``GET /runs`` of an empty store needs neither the YAML parser,
    the loopback's ``http.server``, the notifier's ``urllib.request``, the drift worker, nor
    any model's schema (models are built on first use: ``defer_build``). Before, 45 models
    were built and all four modules imported."""
    done = subprocess.run(
        [sys.executable, "-c", _COMPOSED_GET_RUNS], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[] []", done.stdout
