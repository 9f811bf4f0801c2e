"""IaC run logs: buffered, shipped as append-only chunks addressed by byte offset.

Appending each line to one blob cost two blob-store requests per line on an object store (a
read and a rewrite): 2,762 terraform lines made 5,545 S3 calls. A ``LogShipper`` buffers lines
and writes each batch once, as a new blob ``iac-logs/<enclave>/<partition>/<run>/<offset>``
(``offset`` is the byte offset of the chunk's first byte in the whole log, 12 digits, so keys
sort in log order). A chunk is never rewritten, so a reader sees a log that only grows, while
the run is going too: listing the prefix gives every committed chunk, and a byte offset
selects where to start (``read_log``). When the run ends its ``IacRun`` record, the log's head,
holds the prefix (``log_chunks``) and the committed length (``log_size``).

When a batch is written (``LogShipper._due``):

* at once when 64 KiB are buffered;
* otherwise at most once per second (a timer thread, so a line printed just before terraform
  goes quiet is still shipped), within a budget of flushes: 3, plus one per 150 lines written
  or per 150 s of run time, whichever is more. So a short log shows up within a second, and
  1,000 lines cost at most 10 requests (3 + 6 + the last flush) at any rate down to one line
  per second; a slower, quiet run ships a line within 150 s.

Nothing here reads the environment, and callers never pass secrets (see ``TerraformRunner``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from nclav.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable

    from nclav.ports import BlobStore
    from nclav.records import IacRun

FLUSH_EVERY_S = 1.0
FLUSH_BYTES = 64 * 1024
FREE_FLUSHES = 3
LINES_PER_FLUSH = 150
SECONDS_PER_FLUSH = 150.0
_OFFSET_DIGITS = 12


def log_prefix(enclave_id: str, partition_id: str, run_id: str) -> str:
    """Where an IaC run's chunks live (no trailing '/')."""
    return f"iac-logs/{enclave_id}/{partition_id}/{run_id}"


def chunk_key(prefix: str, offset: int) -> str:
    return f"{prefix}/{offset:0{_OFFSET_DIGITS}d}"


def _chunks(blobs: BlobStore, prefix: str) -> list[tuple[int, str]]:
    """(offset, key) of every committed chunk, in log order."""
    out: list[tuple[int, str]] = []
    for key in blobs.list(prefix + "/"):
        name = key.rsplit("/", 1)[-1]
        if len(name) == _OFFSET_DIGITS and name.isdigit() and key == chunk_key(prefix, int(name)):
            out.append((int(name), key))
    out.sort()
    return out


def read_chunks(blobs: BlobStore, prefix: str, offset: int = 0) -> bytes:
    """The log from byte ``offset`` on, as committed so far (chunks before it are not read)."""
    chunks = _chunks(blobs, prefix)
    # Skip every chunk that ends at or before ``offset``: a chunk ends where the next begins.
    first = 0
    for i, (start, _key) in enumerate(chunks):
        if start <= offset:
            first = i
    parts: list[bytes] = []
    for start, key in chunks[first:]:
        try:
            data = blobs.get(key)
        except NotFoundError:  # deleted meanwhile (the partition was destroyed)
            break
        if start < offset:
            data = data[offset - start :]
        parts.append(data)
    return b"".join(parts)


def append_chunk(blobs: BlobStore, prefix: str, data: bytes) -> None:
    """Add ``data`` after the last committed chunk (a note on an abandoned run's log).

    Only for a log no shipper writes any more: the caller holds the partition mutex.
    """
    chunks = _chunks(blobs, prefix)
    end = 0
    if chunks:
        start, key = chunks[-1]
        try:
            end = start + len(blobs.get(key))
        except NotFoundError:
            end = start
    blobs.put(chunk_key(prefix, end), data)


def read_log(blobs: BlobStore, run: IacRun, offset: int = 0) -> bytes:
    """An IaC run's log from ``offset``: chunked, or one blob (runs recorded before chunks)."""
    if run.log_chunks:
        return read_chunks(blobs, run.log_chunks, offset)
    if run.log_blob and blobs.exists(run.log_blob):
        return blobs.get(run.log_blob)[offset:]
    return b""


# The shippers of this process's running IaC runs, by log prefix: a reader in the same process
# (the local runtime serves the API and runs terraform) sees lines before they are shipped.
_live: dict[str, LogShipper] = {}
_live_lock = threading.Lock()


def live_shipper(prefix: str) -> LogShipper | None:
    """The shipper writing the log under ``prefix`` in this process, if any."""
    with _live_lock:
        return _live.get(prefix)


def read_live(blobs: BlobStore, run: IacRun, offset: int = 0) -> bytes:
    """Like ``read_log``, plus the lines the run's shipper still holds when it runs here.

    The bytes at any offset are the same whichever way they were read (a batch is committed
    exactly as it was buffered), so a follower moving from the buffer to the chunks sees no
    gap and no duplicate. A line shown from the buffer of a process that then dies before
    shipping it is lost from the stored log; the abandoned run's note says so.
    """
    shipper = live_shipper(run.log_chunks) if run.log_chunks else None
    if shipper is None:
        return read_log(blobs, run, offset)
    base, pending = shipper.pending()
    if offset >= base:
        return pending[offset - base :]
    # Committed chunks only grow, so they now reach at least ``base``.
    committed = read_log(blobs, run, offset)
    end = offset + len(committed)
    return committed + pending[max(0, end - base) :]


class LogShipper:
    """Buffers log lines and writes them as chunks (see the module docstring for when).

    ``write`` may be called from any thread; ``close`` ships what is left, stops the timer
    and returns the log's length. ``clock`` is monotonic seconds (tests pass a fake one and
    call ``tick`` themselves with ``timer=False``).
    """

    def __init__(
        self,
        blobs: BlobStore,
        prefix: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: bool = True,
    ) -> None:
        self.blobs = blobs
        self.prefix = prefix
        self._clock = clock
        self._started = clock()
        self._last_flush = self._started
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._lines = 0
        self._flushes = 0
        self._offset = 0  # bytes committed to the blob store
        self._inflight = b""  # the batch being written, from ``_offset`` on
        self._lock = threading.Lock()  # the buffer
        self._io = threading.Lock()  # one chunk written at a time, in order
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if timer:
            self._thread = threading.Thread(target=self._run, name="nclav-iac-log", daemon=True)
            self._thread.start()
        with _live_lock:
            _live[prefix] = self

    @property
    def size(self) -> int:
        """Bytes committed so far."""
        return self._offset

    @property
    def flushes(self) -> int:
        return self._flushes

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        with self._lock:
            self._buffer.append(data)
            self._buffered += len(data)
            self._lines += 1
            due = self._due(self._clock())
        if due:
            self.flush()

    def tick(self) -> None:
        """Ship the buffer if it is due (the timer calls this once a second)."""
        with self._lock:
            due = self._due(self._clock())
        if due:
            self.flush()

    def flush(self) -> None:
        with self._io:
            with self._lock:
                if not self._buffer:
                    return
                data = b"".join(self._buffer)
                self._buffer.clear()
                self._buffered = 0
                self._flushes += 1
                self._last_flush = self._clock()
                offset = self._offset
                self._inflight = data
            try:
                self.blobs.put(chunk_key(self.prefix, offset), data)
            except BaseException:
                with self._lock:  # keep the lines for the next try, in order
                    self._buffer.insert(0, data)
                    self._buffered += len(data)
                    self._inflight = b""
                raise
            with self._lock:
                self._offset = offset + len(data)
                self._inflight = b""

    def pending(self) -> tuple[int, bytes]:
        """(committed length, the bytes written after it but not committed yet).

        One consistent snapshot: the pending bytes are exactly what will be committed from
        that offset on (a batch is written as it was buffered), so a reader in this process
        can show them before they are shipped (``read_live``)."""
        with self._lock:
            return self._offset, self._inflight + b"".join(self._buffer)

    def close(self) -> int:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        finally:
            with _live_lock:
                if _live.get(self.prefix) is self:
                    del _live[self.prefix]
        return self._offset

    def _due(self, now: float) -> bool:
        if not self._buffer:
            return False
        if self._buffered >= FLUSH_BYTES:
            return True
        if now - self._last_flush < FLUSH_EVERY_S:
            return False
        earned = max(
            self._lines // LINES_PER_FLUSH, int((now - self._started) // SECONDS_PER_FLUSH)
        )
        return self._flushes < FREE_FLUSHES + earned

    def _run(self) -> None:
        while not self._closed.wait(FLUSH_EVERY_S):
            try:
                self.tick()
            except Exception:  # a store hiccup: the next tick or close retries with more lines
                continue


__all__ = [
    "FLUSH_BYTES",
    "FLUSH_EVERY_S",
    "LogShipper",
    "append_chunk",
    "chunk_key",
    "live_shipper",
    "log_prefix",
    "read_chunks",
    "read_live",
    "read_log",
]
