"""What is left of a terraform process group after its nclav process died.

Terraform runs in its own session (``start_new_session``), so when the nclav process is
killed (kill -9, OOM) terraform dies on its next write to the closed pipe, but partition code
it started (a ``local-exec`` sleeping, then creating something) lives on in that process group.
``PartitionIac`` records the group (``IacRun.pgid``) with the machine and boot it runs in, and
before the partition is applied again it stops what is left (``stop_group``): SIGTERM, a
grace period, SIGKILL, then it waits until every member is gone.

A process id means something on its machine, during one boot, only: ``machine()`` gives the
host name and the kernel's boot id, and nothing is signalled unless both match. Members are
found in ``/proc`` (process group id, and a start time no earlier than the IaC run's), so a
recycled id of an unrelated process is never signalled. Without ``/proc`` (not Linux) or a
boot id, nothing is stopped and the caller says so. A sandbox that is gone (a Lambda
invocation that timed out) takes its processes with it: there is nothing to stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

_PROC = Path("/proc")


def machine() -> tuple[str, str | None]:
    """(host name, boot id); the boot id is None where the kernel does not give one."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        boot = None
    return socket.gethostname(), boot


def _boot_time() -> float | None:
    try:
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def members(pgid: int, since: float) -> list[int]:
    """Live processes of group ``pgid`` started at or after ``since`` (epoch seconds)."""
    btime = _boot_time()
    if btime is None:
        return []
    ticks = os.sysconf("SC_CLK_TCK")
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        try:
            state, pgrp, start = fields[0], int(fields[2]), int(fields[19])
        except (IndexError, ValueError):
            continue
        if pgrp == pgid and state not in ("Z", "X") and btime + start / ticks >= since:
            found.append(int(entry.name))
    return found


def stop_group(pgid: int, since: float, *, grace_s: float = 5.0, wait_s: float = 30.0) -> int:
    """Stop every member of ``pgid`` started since ``since``; returns how many there were.

    SIGTERM, up to ``grace_s`` for them to exit, SIGKILL to the rest, then up to ``wait_s``
    until none is left (raises ``TimeoutError`` if one survives even SIGKILL).
    """
    first = members(pgid, since)
    if not first:
        return 0
    for pid in first:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while members(pgid, since) and time.monotonic() < end:
        time.sleep(0.1)
    for pid in members(pgid, since):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + wait_s
    while members(pgid, since):
        if time.monotonic() > end:
            raise TimeoutError(f"process group {pgid} survived SIGKILL for {wait_s:.0f} s")
        time.sleep(0.1)
    return len(first)


__all__ = ["machine", "members", "stop_group"]
