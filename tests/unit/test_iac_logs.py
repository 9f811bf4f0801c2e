"""IaC log shipping: batched, offset-addressed chunks, at most 10 blob requests per 1,000 lines.

Before, every line was one ``BlobStore.append`` (two S3 requests each): 1,000 lines cost 1,000
port calls. The counting wrapper below counts every call a shipper or reader makes.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

from nclav.iac.logs import (
    FLUSH_BYTES,
    LogShipper,
    append_chunk,
    chunk_key,
    log_prefix,
    read_chunks,
    read_log,
)
from nclav.local import DirectoryBlobStore
from nclav.records import IacOperation, IacRun

if TYPE_CHECKING:
    from pathlib import Path


class CountingBlobs:
    """A real ``DirectoryBlobStore`` that counts the requests made to it, by method."""

    def __init__(self, root: Path) -> None:
        self.inner = DirectoryBlobStore(root)
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def put(self, key: str, data: bytes) -> None:
        self.calls["put"] += 1
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self.calls["get"] += 1
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        self.calls["exists"] += 1
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        self.inner.delete(key)

    def append(self, key: str, data: bytes) -> None:
        self.calls["append"] += 1
        self.inner.append(key, data)

    def list(self, prefix: str = "") -> list[str]:
        self.calls["list"] += 1
        return self.inner.list(prefix)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ship(blobs: CountingBlobs, lines: int, per_second: float | None, width: int = 80) -> bytes:
    """Write ``lines`` lines at ``per_second`` (None: all at once), ticking once a second."""
    clock = FakeClock()
    shipper = LogShipper(blobs, "iac-logs/e/p/run", clock=clock, timer=False)
    expected = []
    next_tick = clock.now + 1
    for i in range(lines):
        line = f"line {i:05d} ".ljust(width, "x")
        expected.append(line + "\n")
        shipper.write(line)
        if per_second:
            clock.now += 1 / per_second
        while clock.now >= next_tick:  # the timer thread, made deterministic
            shipper.tick()
            next_tick += 1
    shipper.close()
    return "".join(expected).encode()


@pytest.mark.parametrize("lines", [1000, 2000])
@pytest.mark.parametrize("per_second", [None, 1000, 100, 20, 1])
def test_at_most_10_blob_requests_per_1000_lines(
    tmp_path: Path, lines: int, per_second: float | None
) -> None:
    blobs = CountingBlobs(tmp_path)
    expected = ship(blobs, lines, per_second)
    writes = blobs.total
    assert writes <= 10 * lines // 1000, (writes, blobs.calls)
    assert blobs.calls["append"] == 0
    assert read_chunks(blobs.inner, "iac-logs/e/p/run") == expected


def test_a_long_line_burst_flushes_by_size(tmp_path: Path) -> None:
    blobs = CountingBlobs(tmp_path)
    expected = ship(blobs, 1000, None, width=1000)  # ~1 MB: one chunk per 64 KiB
    assert blobs.calls["put"] <= len(expected) // FLUSH_BYTES + 1
    keys = blobs.inner.list("iac-logs/e/p/run/")
    assert all(len(blobs.inner.get(k)) < FLUSH_BYTES + 1001 for k in keys)
    assert read_chunks(blobs.inner, "iac-logs/e/p/run") == expected


def test_the_first_lines_are_readable_within_a_second_while_the_run_goes_on(
    tmp_path: Path,
) -> None:
    blobs = DirectoryBlobStore(tmp_path)
    clock = FakeClock()
    shipper = LogShipper(blobs, "iac-logs/e/p/r", clock=clock, timer=False)
    shipper.write("=== terraform init ===")
    assert read_chunks(blobs, "iac-logs/e/p/r") == b""  # buffered
    clock.now += 1
    shipper.tick()
    assert read_chunks(blobs, "iac-logs/e/p/r") == b"=== terraform init ===\n"
    shipper.write("terraform_data.slow: Provisioning with 'local-exec'...")
    clock.now += 1
    shipper.tick()  # then terraform goes quiet: the line is shipped all the same
    assert b"Provisioning" in read_chunks(blobs, "iac-logs/e/p/r")
    shipper.close()


def test_offsets_address_chunks(tmp_path: Path) -> None:
    blobs = CountingBlobs(tmp_path)
    prefix = "iac-logs/e/p/r"
    blobs.inner.put(chunk_key(prefix, 0), b"hello ")
    blobs.inner.put(chunk_key(prefix, 6), b"big ")
    blobs.inner.put(chunk_key(prefix, 10), b"world\n")
    assert read_chunks(blobs, prefix) == b"hello big world\n"
    blobs.calls.clear()
    assert read_chunks(blobs, prefix, 12) == b"rld\n"
    assert blobs.calls == {"list": 1, "get": 1}  # chunks before the offset are not read
    assert read_chunks(blobs, prefix, 6) == b"big world\n"
    assert read_chunks(blobs, prefix, 99) == b""
    append_chunk(blobs.inner, prefix, b"abandoned\n")
    assert blobs.inner.list(prefix + "/")[-1] == chunk_key(prefix, 16)
    assert read_chunks(blobs, prefix, 16) == b"abandoned\n"


def test_read_log_reads_chunks_and_the_one_blob_of_older_runs(tmp_path: Path) -> None:
    blobs = DirectoryBlobStore(tmp_path)
    run = IacRun(enclave_id="e", partition_id="p", operation=IacOperation.PROVISION, started_at="t")
    assert read_log(blobs, run) == b""
    old = run.model_copy(update={"log_blob": "iac-logs/e/p/old.log"})
    blobs.put("iac-logs/e/p/old.log", b"one blob\n")
    assert read_log(blobs, old, 4) == b"blob\n"
    prefix = log_prefix("e", "p", run.id)
    new = run.model_copy(update={"log_chunks": prefix})
    blobs.put(chunk_key(prefix, 0), b"chunked\n")
    assert read_log(blobs, new) == b"chunked\n"


def test_a_failed_write_keeps_the_lines_for_the_next(tmp_path: Path) -> None:
    class Flaky(CountingBlobs):
        fail = True

        def put(self, key: str, data: bytes) -> None:
            if self.fail:
                self.fail = False
                raise OSError("store hiccup")
            super().put(key, data)

    blobs = Flaky(tmp_path)
    shipper = LogShipper(blobs, "iac-logs/e/p/r", timer=False)
    shipper.write("a")
    with pytest.raises(OSError, match="hiccup"):
        shipper.flush()
    shipper.write("b")
    assert shipper.close() == 4
    assert read_chunks(blobs.inner, "iac-logs/e/p/r") == b"a\nb\n"
