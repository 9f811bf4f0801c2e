"""Live-log latency: from terraform writing a line to a following client receiving it.

A partition's ``local-exec`` prints one line every 100 ms, each carrying the time it was
written (``date +%s.%N``). A real local server (``LocalRuntime``, as ``nclav serve`` wires it)
applies it while a client follows the IaC run's log from the start:

* ``sse``: ``Accept: text/event-stream`` on one connection (http.client), as ``nclav iac logs
  --follow`` does against ``nclav serve``;
* ``polling``: ``GET .../log?offset=N`` with the CLI's backoff (0.5 s after new data, growing
  to 2 s while nothing comes), as on a runtime that cannot stream;
* ``polling-shipped`` (``--shipped``): polling that sees only what the log shipper committed to
  the blob store, i.e. a reader in another process than terraform (AWS: the API Lambda is not
  the IaC worker). Not a target; it shows what the in-process buffer buys.

Per mode: p50/p95/max latency over the lines written after the client connected. Targets:
p95 <= 1.5 s with SSE, <= 3 s polling.

    .venv/bin/python scripts/bench_live_logs.py [--lines 100] [--shipped]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(__file__))
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT)]

from bench_server import local_server  # noqa: E402

_STAMP = re.compile(rb"(\d{10}\.\d{3,9})\s*$")

TF = """
resource "terraform_data" "ticker" {
  triggers_replace = "%(tag)s"
  provisioner "local-exec" {
    command = "for i in $(seq 1 %(lines)d); do echo \\"tick $(date +%%s.%%N)\\"; sleep 0.1; done"
  }
}
"""


def write_tree(root: Path, lines: int, tag: str) -> Path:
    part = root / "bench" / "ticker"
    part.mkdir(parents=True, exist_ok=True)
    (root / "bench" / "config.yml").write_text("id: bench\nname: bench\ncloud: local\nregion: r\n")
    (part / "config.yml").write_text("id: ticker\nname: ticker\n")
    (part / "main.tf").write_text(TF % {"lines": lines, "tag": tag})
    return root


class Latencies:
    def __init__(self, connected: float) -> None:
        self.connected = connected
        self.values: list[float] = []
        self._partial = b""

    def feed(self, data: bytes, received: float) -> None:
        text = self._partial + data
        *lines, self._partial = text.split(b"\n")
        for line in lines:
            found = _STAMP.search(line)
            if found and b"tick" in line:
                written = float(found.group(1))
                if written >= self.connected:
                    self.values.append(received - written)


def _conn(base: str) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)


def follow_sse(base: str, token: str, path: str) -> Latencies:
    conn = _conn(base)
    conn.request(
        "GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    out = Latencies(time.time())
    event = ""
    try:
        while True:
            line = response.readline()
            if not line:
                break
            now = time.time()
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
            elif line.startswith(b"data: ") and event == "log":
                out.feed(json.loads(line[6:])["text"].encode(), now)
            elif line.startswith(b"data: ") and event == "end":
                break
    finally:
        conn.close()
    return out


def follow_polling(base: str, token: str, path: str) -> Latencies:
    conn = _conn(base)
    out = Latencies(time.time())
    offset, delay = 0, 0.5
    try:
        while True:
            conn.request(
                "GET", f"{path}?offset={offset}", headers={"Authorization": f"Bearer {token}"}
            )
            response = conn.getresponse()
            body = response.read()
            out.feed(body, time.time())
            offset = int(response.getheader("X-Nclav-Next-Offset") or offset + len(body))
            if response.getheader("X-Nclav-Complete") == "true":
                return out
            delay = 0.5 if body else min(delay * 1.5, 2.0)
            time.sleep(delay)
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _iac_runs(client: Any) -> list[dict[str, Any]]:
    try:
        return list(client.call("GET", "/enclaves/bench/partitions/ticker/iac/runs"))
    except Exception:  # the partition is not applied yet
        return []


def run_mode(
    client: Any, base: str, token: str, tree: Path, mode: str, lines: int
) -> dict[str, Any]:
    write_tree(tree, lines, f"{mode}-{time.time()}")  # new input: the partition re-applies
    before = {r["id"] for r in _iac_runs(client)}
    run = client.call("POST", "/reconcile", {"enclaves_dir": str(tree)})
    deadline = time.monotonic() + 120
    while True:
        fresh = [r for r in _iac_runs(client) if r["id"] not in before]
        if fresh:
            break
        assert time.monotonic() < deadline, "no IaC run started"
        time.sleep(0.05)
    path = f"/enclaves/bench/partitions/ticker/iac/runs/{fresh[0]['id']}/log"
    follow = follow_sse if mode == "sse" else follow_polling
    result = follow(base, token, path)
    while client.call("GET", f"/runs/{run['run_id']}")["status"] not in ("succeeded", "failed"):
        time.sleep(0.1)
    v = result.values
    return {
        "mode": mode,
        "lines": len(v),
        "p50_s": round(percentile(v, 0.5), 3) if v else None,
        "p95_s": round(percentile(v, 0.95), 3) if v else None,
        "max_s": round(max(v), 3) if v else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100, help="lines per run (10 per second)")
    parser.add_argument("--shipped", action="store_true", help="also poll shipped chunks only")
    args = parser.parse_args()
    os.environ.setdefault("CHECKPOINT_DISABLE", "1")
    results = []
    with tempfile.TemporaryDirectory(prefix="nclav-bench-live-") as scratch:
        tree = Path(scratch) / "tree"
        with local_server() as (client, _home):
            base, token = client.base, client.token
            # The first apply pays terraform init; its latencies count like the others.
            results.append(run_mode(client, base, token, tree, "sse", args.lines))
            results.append(run_mode(client, base, token, tree, "polling", args.lines))
            if args.shipped:
                import nclav.iac.logs as logs

                original = logs.live_shipper
                logs.live_shipper = lambda _prefix: None  # type: ignore[assignment]
                try:
                    result = run_mode(client, base, token, tree, "polling", args.lines)
                finally:
                    logs.live_shipper = original
                results.append({**result, "mode": "polling-shipped"})
    targets = {"sse": 1.5, "polling": 3.0}
    print(f"{'mode':<16} {'lines':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  target p95")
    for r in results:
        target = targets.get(r["mode"])
        verdict = (
            ""
            if target is None
            else (
                f"<= {target} "
                + ("ok" if r["p95_s"] is not None and r["p95_s"] <= target else "MISSED")
            )
        )
        cells = f"{r['p50_s']!s:>7} {r['p95_s']!s:>7} {r['max_s']!s:>7}"
        print(f"{r['mode']:<16} {r['lines']:>5} {cells}  {verdict}")
    print(json.dumps(results))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
