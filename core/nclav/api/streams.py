"""Following a run live: an IaC log read by byte offset, and a run's step transitions.

Both are served two ways from one URL, chosen by the request's ``Accept`` header:

* **polling** (any runtime, any proxy): ``GET .../log?offset=N&limit=M`` answers the bytes from
  ``N`` with ``X-Nclav-Next-Offset`` (where to ask next) and ``X-Nclav-Complete`` (``true``
  once the run has ended and nothing is left); ``Accept: application/json`` gives the same as
  one JSON object. A client polls with a 0.5-2 s backoff, as HCP Terraform's CLI does.
* **server-sent events** (``Accept: text/event-stream``, where the runtime can stream): one
  ``log`` event per piece of log, whose ``id`` is the byte offset just after it, so a
  reconnect with ``Last-Event-ID`` resumes exactly there (no gap, no duplicate); a comment
  line every 15 s keeps proxies from closing an idle stream; an ``end`` event when the run is
  over. Before its platform's response limit (``limit_s``) the stream ends with a ``retry:``
  hint and the client reconnects with ``Last-Event-ID``.

A run's events (``GET /runs/{id}/events``) carry the run's audit events (``audit``, ``id`` =
their ``seq``, so a resume is exact as well), one ``steps`` event first with every step's
current status (a reconnect gets it again: steps are state, not history), then a ``step``
event for each step's status change, and ``end`` with the run's final status.

Nothing here knows about sockets: a stream is an iterator of bytes the server writes out; an
empty piece means "nothing yet", so a server that is stopping can end the stream there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from nclav.api.http import ApiRequest, ApiResponse, BadRequest, StreamingResponse, dump_json

if TYPE_CHECKING:
    from nclav.ports import StateStore

SSE_TYPE = "text/event-stream"
NEXT_OFFSET_HEADER = "X-Nclav-Next-Offset"
COMPLETE_HEADER = "X-Nclav-Complete"
STATUS_HEADER = "X-Nclav-Run-Status"
HEARTBEAT_S = 15.0
POLL_S = 0.1  # how often a stream looks for more (a cheap read on the local runtime)
RETRY_MS = 1000  # the reconnect delay a stream that ends before the run asks for
DEFAULT_LIMIT_S = 900.0  # a stream's longest life; below any proxy's or platform's limit
MAX_PIECE = 256 * 1024  # bytes of log in one event


class LogPage(BaseModel):
    """The JSON form of ``GET .../iac/runs/{id}/log`` (``Accept: application/json``); the
    text form carries the same in ``X-Nclav-Next-Offset``, ``X-Nclav-Complete`` and
    ``X-Nclav-Run-Status``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    offset: int = Field(description="Byte offset of the first byte of `text`.")
    next_offset: int = Field(description="Where to ask next (`?offset=`).")
    complete: bool = Field(description="The run has ended and nothing is left to read.")
    status: str = Field(description="The IaC run's status: running, succeeded or failed.")
    text: str = Field(description="The log from `offset`, at most `limit` bytes.")


class RunEventsPage(BaseModel):
    """The JSON form of ``GET /runs/{id}/events`` (without ``Accept: text/event-stream``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    run_id: str
    status: str
    complete: bool = Field(description="The run is final: no more events will come.")
    events: list[dict[str, Any]] = Field(description="Audit events with `seq` > `after`.")
    steps: list[dict[str, Any]] = Field(description="Every step and its current status.")
    next: int = Field(description="The `after` (or Last-Event-ID) for the next request.")


def wants_stream(request: ApiRequest) -> bool:
    return SSE_TYPE in request.headers.get("accept", "").lower()


def wants_json(request: ApiRequest) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


def last_event_id(request: ApiRequest, maximum: int) -> int | None:
    """The ``Last-Event-ID`` header as a non-negative int (None when absent)."""
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if not raw.isdigit() or int(raw) > maximum:
        raise BadRequest(f"Last-Event-ID must be an integer from 0 to {maximum}, got {raw!r}")
    return int(raw)


def sse(data: object, *, event: str | None = None, ident: int | None = None) -> bytes:
    """One server-sent event whose data is JSON (one line: no newline or CR inside)."""
    lines = []
    if event:
        lines.append(f"event: {event}")
    if ident is not None:
        lines.append(f"id: {ident}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), sort_keys=True))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _retry(reason: str) -> bytes:
    return f"retry: {RETRY_MS}\n: {reason}\n\n".encode()


@dataclass(frozen=True)
class StreamTiming:
    """How a stream paces itself; tests pass a fake clock and sleep."""

    heartbeat_s: float = HEARTBEAT_S
    poll_s: float = POLL_S
    limit_s: float = DEFAULT_LIMIT_S
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _text(data: bytes, final: bool) -> tuple[str, int]:
    """``data`` as text and how many bytes that took: an incomplete UTF-8 character at the
    end waits for the rest (unless the log is final), so offsets stay exact."""
    for cut in range(4):
        end = len(data) - cut
        try:
            return data[:end].decode("utf-8"), end
        except UnicodeDecodeError as exc:
            if final or exc.reason != "unexpected end of data" or exc.end != end:
                break
    return data.decode("utf-8", "replace"), len(data)


# -- IaC log ---------------------------------------------------------------------------------

# read(offset) -> the log from offset; state() -> (ended, status value). ``state`` is asked
# before ``read``, so once it says "ended" the read that follows holds the whole log.
LogRead = Callable[[int], bytes]
LogState = Callable[[], tuple[bool, str]]


def log_page(
    request: ApiRequest, read: LogRead, state: LogState, offset: int, limit: int
) -> ApiResponse:
    """The polling form: up to ``limit`` bytes from ``offset``."""
    ended, status = state()
    data = read(offset)
    more = len(data) > limit
    data = data[:limit]
    next_offset = offset + len(data)
    complete = ended and not more
    headers = {
        NEXT_OFFSET_HEADER: str(next_offset),
        COMPLETE_HEADER: "true" if complete else "false",
        STATUS_HEADER: status,
        "Cache-Control": "no-store",
    }
    if wants_json(request):
        text, _ = _text(data, True)
        doc = {
            "offset": offset,
            "next_offset": next_offset,
            "complete": complete,
            "status": status,
            "text": text,
        }
        return ApiResponse(200, dump_json(doc), {**headers, "Content-Type": "application/json"})
    return ApiResponse(200, data, {**headers, "Content-Type": "text/plain; charset=utf-8"})


def log_stream(
    read: LogRead, state: LogState, offset: int, timing: StreamTiming | None = None
) -> Iterator[bytes]:
    """Server-sent events of a log from ``offset`` until the run ends (or ``limit_s``)."""
    t = timing or StreamTiming()
    started = last_sent = t.clock()
    yield f"retry: {RETRY_MS}\n\n".encode()
    while True:
        ended, status = state()
        data = read(offset)
        if len(data) > MAX_PIECE:
            data, ended = data[:MAX_PIECE], False
        text, used = _text(data, ended)
        if used:
            nxt = offset + used
            yield sse({"offset": offset, "text": text}, event="log", ident=nxt)
            offset, last_sent = nxt, t.clock()
        if ended and used == len(data):
            yield sse({"status": status, "next_offset": offset}, event="end", ident=offset)
            return
        now = t.clock()
        if now - started >= t.limit_s:
            yield _retry("stream time limit reached; reconnect with Last-Event-ID")
            return
        if now - last_sent >= t.heartbeat_s:
            yield b": heartbeat\n\n"
            last_sent = now
        if not used:
            yield b""  # nothing to send: lets the server end the stream if it is stopping
            t.sleep(t.poll_s)


def log_response(
    request: ApiRequest,
    read: LogRead,
    state: LogState,
    *,
    offset: int,
    limit: int,
    streaming: bool,
    timing: StreamTiming | None = None,
    maximum: int,
) -> ApiResponse:
    """The polling page, or the event stream when asked for and this runtime can stream."""
    if streaming and wants_stream(request):
        resume = last_event_id(request, maximum)
        start = resume if resume is not None else offset
        return StreamingResponse(
            200, headers=_stream_headers(), stream=log_stream(read, state, start, timing)
        )
    return log_page(request, read, state, offset, limit)


def _stream_headers() -> dict[str, str]:
    return {
        "Content-Type": f"{SSE_TYPE}; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # nginx: pass events through as they come
    }


# -- run events --------------------------------------------------------------------------------


def _step_doc(step: Any) -> dict[str, Any]:
    return {
        "step_id": step.step_id,
        "action": str(step.action.value if hasattr(step.action, "value") else step.action),
        "enclave_id": step.enclave_id,
        "target": step.target,
        "status": step.status.value,
        "attempts": step.attempts,
        "error": step.error,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
    }


def _run_state(store: StateStore, run_id: str) -> tuple[Any, list[Any]]:
    run = store.get_run(run_id)
    if run is None:
        raise _gone(run_id)
    return run, store.list_steps(run_id)


def _gone(run_id: str) -> Exception:
    from nclav.api.http import NotFound

    return NotFound(f"run {run_id!r} not found")


EVENTS_LIMIT = 10_000


def _events_after(store: StateStore, run_id: str, after: int) -> list[dict[str, Any]]:
    return [
        e.to_json() for e in store.list_events(limit=EVENTS_LIMIT, run_id=run_id) if e.seq > after
    ]


def run_events_page(store: StateStore, run_id: str, after: int) -> ApiResponse:
    """The polling form: the run's audit events after ``seq`` ``after`` and every step."""
    # The status first: once it is final, the events read next include the last ones.
    run, steps = _run_state(store, run_id)
    events = _events_after(store, run_id, after)
    nxt = max([after, *(int(e["seq"]) for e in events)])
    doc = {
        "run_id": run_id,
        "status": run.status.value,
        "complete": run.status.final,
        "events": events,
        "steps": [_step_doc(s) for s in steps],
        "next": nxt,
    }
    return ApiResponse(200, dump_json(doc), {"Content-Type": "application/json"})


def run_events_stream(
    store: StateStore, run_id: str, after: int, timing: StreamTiming | None = None
) -> Iterator[bytes]:
    t = timing or StreamTiming(poll_s=0.25)
    started = last_sent = t.clock()
    seen: dict[str, tuple[str, int]] = {}
    yield f"retry: {RETRY_MS}\n\n".encode()
    while True:
        run, steps = _run_state(store, run_id)
        sent = False
        if not seen:  # every step at once first, so a client knows the total from the start
            seen = {step.step_id: (step.status.value, step.attempts) for step in steps}
            yield sse([_step_doc(step) for step in steps], event="steps")
            sent = True
        for step in steps:
            key = (step.status.value, step.attempts)
            if seen.get(step.step_id) != key:
                seen[step.step_id] = key
                yield sse(_step_doc(step), event="step")
                sent = True
        for event in _events_after(store, run_id, after):
            after = int(event["seq"])
            yield sse(event, event="audit", ident=after)
            sent = True
        if run.status.final:
            doc = {"run_id": run_id, "status": run.status.value, "errors": list(run.errors)}
            yield sse(doc, event="end", ident=after)
            return
        now = t.clock()
        if sent:
            last_sent = now
        if now - started >= t.limit_s:
            yield _retry("stream time limit reached; reconnect with Last-Event-ID")
            return
        if now - last_sent >= t.heartbeat_s:
            yield b": heartbeat\n\n"
            last_sent = now
        yield b""  # nothing to send: lets the server end the stream if it is stopping
        t.sleep(t.poll_s)


def run_events_response(
    request: ApiRequest,
    store: StateStore,
    run_id: str,
    *,
    after: int,
    streaming: bool,
    timing: StreamTiming | None = None,
) -> ApiResponse:
    if streaming and wants_stream(request):
        _run_state(store, run_id)  # 404 now, not inside a stream that already said 200
        resume = last_event_id(request, 2**63 - 1)
        start = resume if resume is not None else after
        return StreamingResponse(
            200, headers=_stream_headers(), stream=run_events_stream(store, run_id, start, timing)
        )
    return run_events_page(store, run_id, after)


__all__ = [
    "COMPLETE_HEADER",
    "LogPage",
    "RunEventsPage",
    "DEFAULT_LIMIT_S",
    "HEARTBEAT_S",
    "NEXT_OFFSET_HEADER",
    "SSE_TYPE",
    "STATUS_HEADER",
    "StreamTiming",
    "last_event_id",
    "log_page",
    "log_response",
    "log_stream",
    "run_events_page",
    "run_events_response",
    "run_events_stream",
    "sse",
    "wants_json",
    "wants_stream",
]
