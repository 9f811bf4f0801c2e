"""Following a run to its end with live per-step progress, on stderr.

Where the server offers server-sent events (``nclav serve``; not AWS Lambda, which cannot
stream), a run is followed through ``GET /runs/{id}/events`` and an IaC log through its
``/log`` URL with ``Accept: text/event-stream``, reconnecting with ``Last-Event-ID`` when a
stream ends before the run; otherwise (an answer that is not an event stream, a 503 because
the server's streams are all in use) by polling, with a 0.5-2 s backoff for logs.

* On a terminal: one status line redrawn in place (done/total, what is running, elapsed), with
  failures and retries printed above it as they happen; cleared at the end.
* Not a terminal, or ``--no-progress``: one plain line per step event, for CI logs.

The final report is the caller's (on stdout); progress is a diagnostic and never mixes with it.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from nclav.cli.common import (
    EXIT_INTERRUPTED,
    CliError,
    InvalidError,
    UnreachableError,
    colors,
    err,
    is_tty,
)
from nclav.cli.render import duration, seconds_between, step_label

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from nclav.cli.client import Client

FINAL_STEP = frozenset({"succeeded", "skipped", "failed", "blocked"})
FINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})
# Where following stops without the run being over: it waits for `nclav runs approve`.
STOPPED_RUN = frozenset({*FINAL_RUN, "awaiting_approval"})


class Progress(Protocol):
    def update(self, run: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _first_line(text: object) -> str:
    """An error's first line, with the last ``Error:`` line of a tool's output when there is
    one (terraform's first line only says which command failed)."""
    lines = [line.strip() for line in str(text or "").strip().split("\n")]
    first = lines[0] if lines else ""
    causes = [line for line in lines[1:] if line.startswith("Error: ")]
    return f"{first}: {causes[-1]}" if causes else first


class _Tracker:
    """The step events between two polls of a run."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, int]] = {}

    def events(self, steps: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for step in steps:
            key = str(step.get("step_id"))
            now = (str(step.get("status")), int(step.get("attempts") or 0))
            before = self.seen.get(key)
            self.seen[key] = now
            if before == now:
                continue
            status, attempts = now
            if status in FINAL_STEP:
                found.append((status, step))
            elif status == "running" and (before is None or before[0] != "running"):
                found.append(("running", step))
            elif status == "ready" and step.get("error") and attempts >= 1:
                found.append(("retrying", step))
        return found


class LineProgress:
    """One plain line per step event (not a terminal, or --no-progress)."""

    def __init__(self, write: Callable[[str], None] = err) -> None:
        self.write = write
        self.tracker = _Tracker()
        self.done = 0

    def update(self, run: dict[str, Any]) -> None:
        steps = run.get("steps") or []
        total = len(steps)
        for event, step in self.tracker.events(steps):
            if event in FINAL_STEP:
                self.done += 1
            counter = f"[{self.done:>{len(str(total))}}/{total}]"
            label = step_label(step)
            if event in FINAL_STEP:
                took = seconds_between(step.get("started_at"), step.get("finished_at"))
                tail = f" ({duration(took)})" if took is not None else ""
                if event == "failed":
                    tail += f": {_first_line(step.get('error'))}"
                elif event == "blocked":
                    tail = " (a step it depends on failed)"
                elif event == "skipped":
                    tail = " (nothing upstream changed)"
                self.write(f"{counter} {event:<9} {label}{tail}")
            elif event == "retrying":
                attempt = int(step.get("attempts") or 0) + 1
                self.write(
                    f"{counter} retrying  {label} (attempt {attempt}): "
                    f"{_first_line(step.get('error'))}"
                )
            else:
                self.write(f"{counter} {event:<9} {label}")

    def close(self) -> None:
        pass


_SPIN_UTF8 = "\u280b\u2819\u2839\u2838\u283c\u2834\u2826\u2827\u2807\u280f"
_SPIN_ASCII = "|/-\\"


class LiveProgress:
    """A status line redrawn in place on a terminal; failures and retries scroll above it."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tracker = _Tracker()
        self.started = time.monotonic()
        self.ticks = 0
        encoding = (getattr(self.stream, "encoding", None) or "").lower().replace("-", "")
        self.spin = _SPIN_UTF8 if encoding == "utf8" else _SPIN_ASCII
        self.color = colors(err=True)
        self.drawn = False

    def _paint(self, text: str, fg: str) -> str:
        import click

        return click.style(text, fg=fg) if self.color else text

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[2K")
            self.drawn = False

    def update(self, run: dict[str, Any]) -> None:
        steps = run.get("steps") or []
        events = self.tracker.events(steps)
        self._clear()
        for event, step in events:
            if event == "failed":
                mark = self._paint("failed  ", "red")
                self.stream.write(f"{mark} {step_label(step)}: {_first_line(step.get('error'))}\n")
            elif event == "retrying":
                mark = self._paint("retrying", "yellow")
                self.stream.write(f"{mark} {step_label(step)}: {_first_line(step.get('error'))}\n")
        done = sum(1 for s in steps if s.get("status") in FINAL_STEP)
        failed = sum(1 for s in steps if s.get("status") in ("failed", "blocked"))
        running = [s for s in steps if s.get("status") == "running"]
        self.ticks += 1
        spinner = self.spin[self.ticks % len(self.spin)]
        elapsed = duration(time.monotonic() - self.started)
        parts = [f"{spinner} {done}/{len(steps)} steps", elapsed]
        if failed:
            parts.append(f"{failed} failed")
        if running:
            more = f" +{len(running) - 1}" if len(running) > 1 else ""
            parts.append(f"{step_label(running[0])}{more}")
        line = (" \u00b7 " if self.spin is _SPIN_UTF8 else " - ").join(parts)
        width = shutil.get_terminal_size((100, 20)).columns - 1
        if len(line) > width:  # a wrapped line could not be redrawn in place
            line = line[: max(width - 1, 10)] + ("\u2026" if self.spin is _SPIN_UTF8 else "~")
        if failed:
            line = line.replace(f"{failed} failed", self._paint(f"{failed} failed", "red"), 1)
        self.stream.write(line)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        self._clear()
        self.stream.flush()


def make_progress(plain: bool) -> Progress:
    """Live on a terminal (stderr) unless ``plain``; plain lines otherwise."""
    if not plain and is_tty(sys.stderr) and not _dumb():
        return LiveProgress()
    return LineProgress()


def _dumb() -> bool:
    import os

    return os.environ.get("TERM") == "dumb"


RECONNECT_ENV = "NCLAV_RECONNECT_TIMEOUT"
DEFAULT_RECONNECT_S = 30.0


def reconnect_window() -> float:
    """How long to keep trying a server that went away mid-run: $NCLAV_RECONNECT_TIMEOUT
    seconds (0 gives up at once), else 30."""
    import os

    text = os.environ.get(RECONNECT_ENV, "").strip()
    if not text:
        return DEFAULT_RECONNECT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise InvalidError(f"{RECONNECT_ENV} must be a number of seconds >= 0, got {text!r}")
    return value


def _connection_lost(exc: UnreachableError) -> bool:
    """A dropped or refused connection (worth retrying), not a refused token."""
    import http.client

    return isinstance(exc.__cause__, OSError | http.client.HTTPException)


class _Reconnect:
    """Retries of a server that went away while a run was followed: one line when it goes,
    one when it is back, growing pauses (0.5 s up to 5 s) within ``window_s``."""

    def __init__(self, run_id: str, window_s: float, progress: Progress | None) -> None:
        self.run_id = run_id
        self.window_s = window_s
        self.progress = progress
        self.since: float | None = None
        self.pause = 0.5

    def lost(self, exc: UnreachableError) -> None:
        """Wait before the next try, or give up with the run id and how to follow it."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            if self.progress is not None:
                self.progress.close()  # a live status line must not swallow the message
            if self.window_s > 0:
                err(
                    f"server unreachable, retrying for up to {self.window_s:g}s "
                    f"(run {self.run_id} carries on on the server)"
                )
        left = self.since + self.window_s - now
        if left <= 0:
            raise UnreachableError(
                f"lost the server while following run {self.run_id}: {exc.message}",
                hint=f"The run carries on once the server is back; follow it with: "
                f"nclav runs show {self.run_id} --follow",
            ) from exc
        time.sleep(min(self.pause, left))
        self.pause = min(self.pause * 2, 5.0)

    def answered(self) -> None:
        if self.since is not None:
            err(f"server reachable again; following run {self.run_id}")
            self.since, self.pause = None, 0.5


def follow_run(
    api: Client,
    run_id: str,
    progress: Progress | None,
    *,
    poll_s: float = 0.2,
    max_poll_s: float = 1.0,
    timeout_s: float | None = None,
    reconnect_s: float | None = None,
    stream: bool = True,
) -> dict[str, Any]:
    """Follow the run until it is final (or awaits approval); returns it with its steps.

    Through the run's event stream when the server offers one (and no ``timeout_s`` is
    set), else (or when it breaks) by polling ``GET /runs/{id}``.

    When the server goes away (stopped or restarted mid-run), keep trying for
    ``reconnect_s`` (default ``reconnect_window()``) before exiting 3 with the run id.
    Ctrl-C stops following (the run carries on on the server) and exits 130.
    """
    from nclav.cli.client import seg

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = poll_s
    retry = _Reconnect(run_id, reconnect_window() if reconnect_s is None else reconnect_s, progress)
    try:
        if stream and timeout_s is None:
            try:
                streamed = _follow_run_events(api, run_id, progress)
            except UnreachableError as exc:
                if not _connection_lost(exc):
                    raise
                streamed = False  # the polling below reconnects within the window
            if streamed:
                run_done: dict[str, Any] = api.get(f"/runs/{seg(run_id)}")
                if progress is not None:
                    progress.update(run_done)
                return run_done
        while True:
            try:
                run: dict[str, Any] = api.get(f"/runs/{seg(run_id)}")
            except UnreachableError as exc:
                if not _connection_lost(exc):
                    raise
                retry.lost(exc)
                continue
            retry.answered()
            if progress is not None:
                progress.update(run)
            if run.get("status") in STOPPED_RUN:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise CliError(
                    f"run {run_id} is still {run.get('status')} after {timeout_s:g}s",
                    hint=f"It carries on on the server: nclav runs show {run_id} --follow",
                )
            time.sleep(delay)
            delay = min(delay * 1.25, max_poll_s)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        err(f"Stopped following run {run_id}; it carries on on the server.")
        err(f"Follow it again with: nclav runs show {run_id} --follow")
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if progress is not None:
            progress.close()


# -- server-sent events --------------------------------------------------------------------

SSE_TYPE = "text/event-stream"
STREAM_READ_S = 60.0  # a read gives up after this long: four missed 15 s heartbeats


class SseEvent:
    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, ident: str | None, data: str) -> None:
        self.event, self.id, self.data = event, ident, data

    def json(self) -> Any:
        import json

        return json.loads(self.data)


def sse_events(lines: Iterable[bytes]) -> Iterator[SseEvent]:
    """Parse an event stream (the HTML standard's rules, minus what nclav never sends)."""
    event, ident = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event, ident, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value


def _read_events(response: Any) -> Iterator[SseEvent]:
    """The events of an open stream; a dropped connection or a silent one (no heartbeat
    within ``STREAM_READ_S``) just ends it, and the caller reconnects with Last-Event-ID
    (which reports a server that is really gone)."""
    import http.client

    try:
        yield from sse_events(response)
    except (OSError, http.client.HTTPException):
        return


def _open_events(
    api: Client, path: str, last_id: str | None, query: Mapping[str, object] | None = None
) -> Any:
    """The open event stream, or None when the server answers some other way (no streaming
    on this runtime, or all its streams busy): the caller polls instead."""
    from nclav.cli.client import ApiError

    headers = {"Accept": SSE_TYPE}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    try:
        response = api.open_stream(path, query=query, headers=headers, timeout_s=STREAM_READ_S)
    except ApiError as exc:
        if exc.status in (406, 503):
            return None
        raise
    if SSE_TYPE not in (response.headers.get("Content-Type") or ""):
        response.close()
        return None
    return response


def follow_log(
    api: Client,
    path: str,
    offset: int,
    write: Callable[[bytes], None],
    *,
    stream: bool = True,
    min_poll_s: float = 0.5,
    max_poll_s: float = 2.0,
) -> str:
    """Write an IaC log from byte ``offset`` as it grows until its run ends; the run's status.

    Server-sent events when offered (reconnecting with ``Last-Event-ID`` = the byte offset),
    else offset polling with a backoff from ``min_poll_s`` to ``max_poll_s`` while nothing
    new arrives."""
    while stream:
        response = _open_events(api, path, None if offset == 0 else str(offset))
        if response is None:
            break
        try:
            for event in _read_events(response):
                if event.event == "log":
                    write(str(event.json()["text"]).encode("utf-8"))
                    offset = int(event.id or offset)
                elif event.event == "end":
                    return str(event.json()["status"])
        finally:
            response.close()
        # The stream ended before the run (the server's time limit): resume where it was.
    delay = min_poll_s
    while True:
        page = api.request("GET", path, query={"offset": offset}, headers={"Accept": "*/*"})
        if page.body:
            write(page.body)
        offset = int(page.headers.get("X-Nclav-Next-Offset") or offset + len(page.body))
        if page.headers.get("X-Nclav-Complete") == "true":
            return str(page.headers.get("X-Nclav-Run-Status") or "")
        delay = min_poll_s if page.body else min(delay * 1.5, max_poll_s)
        time.sleep(delay)


def _follow_run_events(api: Client, run_id: str, progress: Progress | None) -> bool:
    """Follow the run's event stream to its end; False when the server does not stream."""
    from nclav.cli.client import seg

    path = f"/runs/{seg(run_id)}/events"
    steps: dict[str, dict[str, Any]] = {}
    last_id: str | None = None
    while True:
        response = _open_events(api, path, last_id)
        if response is None:
            return False
        try:
            for event in _read_events(response):
                last_id = event.id or last_id
                if event.event in ("steps", "step"):
                    found = event.json()
                    for step in found if isinstance(found, list) else [found]:
                        steps[str(step["step_id"])] = step
                    if progress is not None:
                        progress.update({"steps": list(steps.values())})
                elif event.event == "end":
                    return True
        finally:
            response.close()


__all__ = [
    "SseEvent",
    "follow_log",
    "sse_events",
    "LineProgress",
    "LiveProgress",
    "Progress",
    "follow_run",
    "make_progress",
    "reconnect_window",
]
