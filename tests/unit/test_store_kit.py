"""The pieces every cloud runtime shares from core: the store kit (nclav.runtime.stores), the
API token in a secret store (nclav.runtime.token), the git source over a secret store
(nclav.runtime.git) and the polling form of a runtime that cannot stream."""

from __future__ import annotations

import os
import zlib
from typing import TYPE_CHECKING, Any, cast

import pytest

from nclav.api.http import ApiRequest, ApiResponse, StreamingResponse, json_response
from nclav.api.router import Router
from nclav.errors import ConflictError, ServiceError
from nclav.gitsource.source import WEBHOOK_SECRET, GitSource
from nclav.local.dir_blobs import DirectoryBlobStore
from nclav.plan import Action
from nclav.records import StepRecord, StepStatus, iso_time
from nclav.runtime.dead_letters import dead_letter_count
from nclav.runtime.git import hosted_git_source
from nclav.runtime.handlers import answer
from nclav.runtime.routing import StepQueues
from nclav.runtime.stores import (
    COMPRESS_ABOVE,
    RecordTooLargeError,
    claimable,
    claimed,
    finished,
    history_expiry,
    holds,
    lease_expired,
    pack_record,
    renewed,
    seq_text,
    stuck_ready,
    unpack_record,
)
from nclav.runtime.token import StoredToken

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

T0 = 1_767_225_600.0


def step(**fields: Any) -> StepRecord:
    base = {"run_id": "r", "step_id": "s", "action": Action.PROVISION_ENCLAVE, "enclave_id": "e"}
    return StepRecord.model_validate({**base, **fields})


# -- records as stored ---------------------------------------------------------------------


def test_a_small_record_is_its_text_and_a_large_one_compressed() -> None:
    small = '{"a": 1}'
    assert pack_record(small, "x", max_bytes=10, where="an item") == small
    large = '{"v": "' + "abc" * COMPRESS_ABOVE + '"}'
    packed = pack_record(large, "x", max_bytes=len(large), where="an item")
    assert isinstance(packed, bytes) and len(packed) < len(large)
    assert zlib.decompress(packed).decode() == large
    assert unpack_record(packed) == large and unpack_record(small) == small


def test_a_record_too_large_even_compressed_is_refused_naming_it() -> None:
    noise = os.urandom(20_000).hex()  # random: compressed, still far above 1,000 bytes
    with pytest.raises(RecordTooLargeError) as caught:
        pack_record(noise, "run r1", max_bytes=1_000, where="a test item")
    assert isinstance(caught.value, ServiceError)
    assert "run r1" in str(caught.value) and "a test item" in str(caught.value)


def test_seq_keys_sort_as_numbers() -> None:
    assert sorted([seq_text(10), seq_text(9), seq_text(100)]) == [
        seq_text(9),
        seq_text(10),
        seq_text(100),
    ]


# -- the step lease rules --------------------------------------------------------------------


def test_claimable_steps_are_ready_and_due_or_running_with_an_expired_lease() -> None:
    assert claimable(step(status=StepStatus.READY), T0)
    assert not claimable(step(status=StepStatus.READY, not_before=T0 + 1), T0)
    running = step(status=StepStatus.RUNNING, lease_owner="w", lease_expires_at=T0)
    assert claimable(running, T0) and lease_expired(running, T0)
    assert not claimable(running, T0 - 1)
    assert not claimable(step(status=StepStatus.PENDING), T0)
    assert not claimable(step(status=StepStatus.SUCCEEDED), T0)


def test_a_claim_a_renewal_and_a_finish_change_what_the_port_says() -> None:
    ready = step(status=StepStatus.READY, not_before=T0 - 5, version=3, attempts=1)
    mine = claimed(ready, "w", 60.0, T0)
    assert mine.status == StepStatus.RUNNING and mine.lease_owner == "w"
    assert (mine.lease_expires_at, mine.not_before, mine.started_at) == (
        T0 + 60,
        None,
        iso_time(T0),
    )
    assert (mine.attempts, mine.version) == (2, 4)
    assert holds(mine, "w") and not holds(mine, "other") and not holds(None, "w")
    later = renewed(mine, 60.0, T0 + 30)
    assert later.lease_expires_at == T0 + 90 and later.version == 5
    done = finished(later, StepStatus.FAILED, "boom", T0 + 40)
    assert (done.status, done.error, done.lease_owner, done.lease_expires_at) == (
        StepStatus.FAILED,
        "boom",
        None,
        None,
    )
    assert done.finished_at == iso_time(T0 + 40) and done.sent_at is None and done.version == 6
    again = finished(later, StepStatus.READY, "retry", T0 + 40, not_before=T0 + 100)
    assert again.sent_at == T0 + 40 and again.not_before == T0 + 100
    assert stuck_ready(again, T0 + 100) and not stuck_ready(again, T0 + 99)


def test_history_expires_after_the_retention_and_zero_keeps_it() -> None:
    at = history_expiry({"NCLAV_RETENTION_DAYS": "2"})
    assert at is not None
    assert history_expiry({"NCLAV_RETENTION_DAYS": "0"}) is None
    default = history_expiry({})
    assert default is not None and default - at == pytest.approx(88 * 86_400, abs=5)


# -- the API token in a secret store ---------------------------------------------------------


class Secrets:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads = 0

    def get(self, name: str) -> str | None:
        self.reads += 1
        return self.values.get(name)

    def put(self, name: str, value: str) -> None:
        self.values[name] = value


def test_a_token_is_made_on_first_use_and_read_again_after_its_ttl() -> None:
    secrets, now = Secrets(), [0.0]
    token = StoredToken(secrets, "api-token", ttl_s=300.0, clock=lambda: now[0])
    first = token()
    assert secrets.values["api-token"] == first and len(first) == 64
    secrets.values["api-token"] = "b" * 64  # rotated by the operator
    now[0] = 299.0
    assert token() == first
    now[0] = 300.0
    assert token() == "b" * 64


def test_a_sandbox_that_loses_the_first_write_uses_the_winners_token() -> None:
    secrets = Secrets()

    def lost(_token: str) -> None:
        secrets.values["api-token"] = "w" * 64  # the other sandbox's write landed first
        raise ConflictError("a first version exists")

    assert StoredToken(secrets, write_first=lost)() == "w" * 64


# -- a runtime that cannot stream --------------------------------------------------------------


def test_a_runtime_that_cannot_stream_answers_the_polling_form_marked() -> None:
    seen: list[tuple[str, float | None]] = []
    router = Router()

    def handler(request: ApiRequest, _params: dict[str, str], _auth: Any) -> ApiResponse:
        seen.append((request.headers.get("accept", ""), request.time_left_s))
        return json_response(200, {"ok": True})

    router.add("GET", "/x", handler, auth="none")

    def ask(accept: str, streams: bool) -> ApiResponse:
        request = ApiRequest.build("GET", "/x", headers={"Accept": accept})
        result: ApiResponse = answer(
            request,
            request_id="r",
            to_request=lambda r: r,
            to_result=lambda r: r,
            router=lambda: router,
            streams=streams,
            time_left_s=lambda: 12.5,
        )
        return result

    polled = ask("text/event-stream, application/json;q=0.5", streams=False)
    assert polled.status == 200 and not isinstance(polled, StreamingResponse)
    assert polled.headers["X-Nclav-Streaming"] == "unsupported"
    assert seen[-1] == ("application/json;q=0.5", 12.5)
    assert ask("text/event-stream", streams=False).status == 200
    assert seen[-1][0] == "*/*"
    streamed = ask("text/event-stream", streams=True)
    assert "X-Nclav-Streaming" not in streamed.headers
    assert seen[-1][0] == "text/event-stream"


# -- the git source of a hosted runtime --------------------------------------------------------


def test_the_git_source_makes_its_webhook_secret_once_and_is_off_without_one(
    tmp_path: Path,
) -> None:
    secrets, blobs = Secrets(), DirectoryBlobStore(tmp_path)

    def build(store: Any) -> GitSource | None:
        return hosted_git_source(
            cast("Any", None),  # the service: only used when a push arrives
            blobs=blobs,
            queue=cast("Any", None),
            secrets=store,
            secret_hint="the test's secret store",
            environ={},
        )

    first = build(secrets)
    assert first is not None and first.shared
    assert first.webhook_secret == secrets.values[WEBHOOK_SECRET]
    second = build(secrets)
    assert second is not None and second.webhook_secret == first.webhook_secret

    class Denied(Secrets):
        def get(self, name: str) -> str | None:
            raise ServiceError("AccessDenied", status=403, code="AccessDenied")

    assert build(Denied()) is None  # the rest of the API still serves


# -- a cloud's two queues ------------------------------------------------------------------------


class Queue:
    def __init__(self, dead: int | None = None) -> None:
        self.sent: list[dict[str, str]] = []
        self.dead = dead

    def send(self, message: Mapping[str, str], delay_s: float = 0) -> None:
        self.sent.append(dict(message))

    def close(self) -> None:
        pass


class CountingQueue(Queue):
    def dead_letter_count(self) -> int | None:
        return self.dead


def test_step_queues_send_terraform_apart_and_count_both_dead_letter_queues() -> None:
    steps, iac = CountingQueue(2), CountingQueue(None)
    queues = StepQueues(steps, iac)
    queues.send({"run_id": "r", "step_id": "a", "action": Action.PROVISION_PARTITION.value})
    queues.send({"run_id": "r", "step_id": "b", "action": Action.PROVISION_ENCLAVE.value})
    assert [m["step_id"] for m in iac.sent] == ["a"]
    assert [m["step_id"] for m in steps.sent] == ["b"]
    assert dead_letter_count(queues) == 2
    iac.dead = 3
    assert dead_letter_count(queues) == 5
    assert dead_letter_count(StepQueues(Queue(), Queue())) is None  # neither can count
