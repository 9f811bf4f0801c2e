"""Git-push reconcile benchmark (issue 15): webhook answer time, push-to-plan, incremental fetch.

Everything is real and local: ``git http-backend`` behind tests/gitserver.py's wrapper, commits
pushed with ``git``, real ``nclav serve`` processes following the repository (each its own
process, as an operator runs it: the benchmark's polling shares no interpreter with it), signed
GitHub push deliveries built from the octokit example.

1. Webhook answer time: 50 deliveries (50 commits) sent at once to a real ``nclav serve``
   process, each on its own connection; p50/p99 of the time to the full answer.
   Target: p99 <= 100 ms.
2. Push-to-plan: the 1,000 x 10 synthetic tree (scripts/synth_tree.py, as bench_core makes
   it) committed under ``enclaves/``; time from sending the webhook to the run's stored plan
   (the run has left "queued": its 14,900 steps are stored), as a ratio to
   ``git clone --depth 1`` + ``nclav validate`` of the same commit run alone. ``--runs`` pairs
   (default 5), each a baseline then a push to a fresh server (stopped as the apply begins),
   so both sides of a pair see the same load on a shared machine; the median ratio and its
   spread are printed, with where the server's time went (its log line for the push: fetch,
   load, pack and store the bundle, create and begin the run), and the ratio of CPU seconds
   (the server process and the git server's CGIs, against git, the CGIs and the validating
   process): steady on a busy machine, it is what the ratio comes to on an idle one. Then
   once more with the tree's applied state seeded (as bench_noop does: a no-op plan against
   1,000 applied enclaves). Target: <= 1.5. ``--dir /dev/shm`` keeps a shared machine's disk
   load out of both sides (and makes the clone cheaper: the stricter comparison).
3. A second push changing one file: pack bytes the second fetch added to the source's object
   store, as a share of the first's. Target: <= 10%.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [
    str(HERE),
    str(HERE.parent / "tests"),
    str(HERE.parent / "tests" / "e2e"),
    str(HERE.parent / "core"),
]

from serve_harness import Server as ServeProcess  # type: ignore[import-not-found]  # noqa: E402

from gitserver import (  # type: ignore[import-not-found]  # noqa: E402
    GitServer,
    Repo,
    git,
    github_headers,
    github_push,
)
from nclav.config import load_directory  # noqa: E402
from nclav.graph import validate_graph  # noqa: E402
from nclav.local.sqlite_store import SqliteStateStore  # noqa: E402
from nclav.transitions import simulate_apply  # noqa: E402
from synth_tree import write_tree  # noqa: E402

SECRET = "bench-webhook-secret"
ZERO = "0" * 40


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def webhook_latency(root: Path, gits: GitServer, deliveries: int) -> list[float]:
    """Signed deliveries sent at once to a real ``nclav serve`` process (its own GIL)."""
    gits.create("bench/small")
    url = gits.url("bench/small")
    repo = Repo(root / "small", url)
    shas: list[str] = []
    for i in range(deliveries):
        text = f"id: app\nname: App {i}\ncloud: local\nregion: local-1\n"
        shas.append(repo.commit(f"change {i}", {"enclaves/app/config.yml": text}))
    repo.push()
    env = {"NCLAV_GIT_URL": url, "NCLAV_GIT_WEBHOOK_SECRET": SECRET, "NCLAV_GIT_POLL_S": "0"}
    server = ServeProcess(root / "home-small", env=env)
    server.start()
    try:
        times: list[float] = []
        statuses: list[int] = []
        gate = threading.Barrier(deliveries)

        def send(i: int) -> None:
            body = github_push(url, "refs/heads/main", shas[i - 1] if i else ZERO, shas[i])
            headers = github_headers(SECRET, body, str(uuid.uuid4()))
            conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            conn.connect()  # connected before the gate: the answer time, not thread start-up
            gate.wait()
            started = time.perf_counter()
            conn.request("POST", "/webhooks/github", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            statuses.append(response.status)
            conn.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(deliveries)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [202] * deliveries, statuses
    finally:
        server.stop()
    return times


def pack_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "git").glob("*/objects/pack/*.pack"))


# The git source's log line for a started run: where its time went.
PHASES = re.compile(
    r"git source: commit (?P<commit>[0-9a-f]{40}) started run \S+ \(fetched \d+ bytes in "
    r"(?P<fetch>[\d.]+) s, loaded the tree in (?P<load>[\d.]+) s, packed and stored the "
    r"bundle in (?P<store>[\d.]+) s, created and began the run in (?P<start>[\d.]+) s\)"
)
PHASE_NAMES = ("fetch", "load", "store", "start")


def serve(home: Path, url: str) -> ServeProcess:
    """A real ``nclav serve`` process following ``url``, as an operator runs it."""
    env = {"NCLAV_GIT_URL": url, "NCLAV_GIT_WEBHOOK_SECRET": SECRET, "NCLAV_GIT_POLL_S": "0"}
    server = ServeProcess(home, env=env)
    server.start()
    return server


def deliver(server: ServeProcess, url: str, before: str, after: str) -> int:
    body = github_push(url, "refs/heads/main", before, after)
    headers = github_headers(SECRET, body, str(uuid.uuid4()))
    return int(server.request("POST", "/webhooks/github", body, headers=headers).status)


def children_cpu() -> float:
    """CPU seconds of this process's finished children: git, and the git server's CGIs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds the process ``pid`` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_plan(
    server: ServeProcess, url: str, commit: str
) -> tuple[float, float, dict[str, float]]:
    """Seconds from sending the webhook to the run's stored plan (the run has left "queued":
    ``begin_run`` stored its steps), the CPU seconds spent meanwhile by the server and the git
    server's CGIs, and the phases the server logged for the push.

    The run's status is read from the server's state database (WAL: a reader never blocks
    the writer), not asked of the server: a request every 10 ms would take the server's
    interpreter from the work being measured.
    """
    db = sqlite3.connect(f"file:{server.home / 'state.db'}?mode=ro", uri=True)
    assert server.proc is not None
    pid = server.proc.pid
    try:
        cpu = process_cpu(pid) + children_cpu()
        started = time.perf_counter()
        status = deliver(server, url, ZERO, commit)
        assert status == 202, status
        while True:
            row = db.execute("SELECT status FROM runs ORDER BY seq DESC LIMIT 1").fetchone()
            if row is not None and row[0] != "queued":
                break
            time.sleep(0.01)
        took = time.perf_counter() - started
        cpu = process_cpu(pid) + children_cpu() - cpu
    finally:
        db.close()
    runs = server.get("/runs?limit=1").json
    assert runs[0]["origin"]["commit"] == commit, runs
    deadline = time.monotonic() + 60
    while (found := PHASES.search(server.stderr())) is None:  # logged as start_run returns
        assert time.monotonic() < deadline, server.stderr()[-2000:]
        time.sleep(0.05)
    return took, cpu, {name: float(found[name]) for name in PHASE_NAMES}


def baseline_once(root: Path, url: str, name: str) -> tuple[float, float]:
    """``git clone --depth 1`` + ``nclav validate`` of the same commit, run alone: seconds,
    and the CPU seconds of git, the git server's CGIs and the validating process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    clone = root / name
    cpu = children_cpu()
    started = time.perf_counter()
    git("clone", "-q", "--depth", "1", url, str(clone), cwd=root)
    done = subprocess.run(
        [sys.executable, "-m", "nclav", "validate", str(clone / "enclaves")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return took, children_cpu() - cpu


@dataclass(frozen=True)
class Pair:
    """One baseline and one push-to-plan measured right after it."""

    base: float
    base_cpu: float
    took: float
    cpu: float
    phases: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.took / self.base

    @property
    def cpu_ratio(self) -> float:
        return self.cpu / self.base_cpu


def push_to_plan(
    root: Path, gits: GitServer, enclaves: int, partitions: int, runs: int
) -> dict[str, Any]:
    gits.create("bench/big")
    url = gits.url("bench/big")
    repo = Repo(root / "big", url)
    write_tree(str(repo.path / "enclaves"), enclaves, partitions)
    first = repo.commit("the synthetic tree")
    repo.push()

    # Pairs, each a baseline then a push to a fresh server, so both see the same machine load
    # (the machine is shared: a slow minute slows both sides of a pair).
    pairs: list[Pair] = []
    for i in range(runs):
        base, base_cpu = baseline_once(root, url, f"clone{i}")
        server = serve(root / f"home-fresh{i}", url)
        try:
            took, cpu, phases = time_to_plan(server, url, first)
        finally:
            server.stop()  # a fresh tree's apply has begun: stop it, no need to finish
        pair = Pair(base, base_cpu, took, cpu, phases)
        pairs.append(pair)
        print(
            f"  run {i + 1}: baseline {base:.2f} s, push-to-plan {took:.2f} s, "
            f"ratio {pair.ratio:.2f}; CPU {base_cpu:.2f} s / {cpu:.2f} s = "
            f"{pair.cpu_ratio:.2f}; "
            + ", ".join(f"{name} {phases[name]:.2f} s" for name in PHASE_NAMES),
            flush=True,
        )

    # The tree's applied state seeded (as bench_noop does): a no-op plan against 1,000
    # applied enclaves.
    home = root / "home-seeded"
    home.mkdir()
    applied = simulate_apply(validate_graph(load_directory(str(repo.path / "enclaves"))), {})
    store = SqliteStateStore(home / "state.db")
    try:
        for state in applied.values():
            store.put_enclave(state, None)
    finally:
        store.close()
    seeded_base, _cpu = baseline_once(root, url, "clone-seeded")
    server = serve(home, url)
    try:
        seeded, _cpu, _phases = time_to_plan(server, url, first)
        # A second push changing one file, to the server that fetched the first.
        first_bytes = pack_bytes(home)
        config = repo.path / "enclaves" / "group000" / "e0000" / "config.yml"
        config.write_text(config.read_text().replace("Synthetic enclave 0", "Enclave zero"))
        second = repo.commit("rename e0000")
        repo.push()
        assert deliver(server, url, first, second) == 202
        deadline = time.monotonic() + 60
        while pack_bytes(home) == first_bytes:
            assert time.monotonic() < deadline, "the second push was never fetched"
            time.sleep(0.05)
        second_bytes = pack_bytes(home) - first_bytes
    finally:
        server.stop()
    return {
        "pairs": pairs,
        "seeded": (seeded_base, seeded),
        "first_bytes": float(first_bytes),
        "second_bytes": float(second_bytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--enclaves", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5, help="push-to-plan pairs (default 5)")
    parser.add_argument(
        "--only", choices=("webhook", "push"), help="measure only the webhook or the push"
    )
    parser.add_argument(
        "--dir",
        help="where the repositories, clones and server homes go (default: the system's "
        "temporary directory; /dev/shm keeps a shared machine's disk load out of the figures)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nclav-bench-git-", dir=args.dir))
    times: list[float] = []
    big: dict[str, Any] = {}
    try:
        with GitServer(root / "git") as gits:
            if args.only != "push":
                times = webhook_latency(root, gits, args.deliveries)
            if args.only != "webhook":
                big = push_to_plan(root, gits, args.enclaves, args.partitions, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if times:
        p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
        print(
            f"webhook answer, {args.deliveries} concurrent deliveries: p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, mean {statistics.mean(times) * 1000:.1f} ms "
            "(target p99 <= 100 ms)"
        )
    if big:
        pairs: list[Pair] = big["pairs"]
        ratios = [p.ratio for p in pairs]
        cpu_ratios = [p.cpu_ratio for p in pairs]
        median = statistics.median
        print(
            f"push-to-plan, {args.enclaves} x {args.partitions} tree, {len(pairs)} runs: "
            f"median {median(p.took for p in pairs):.2f} s; git clone --depth 1 + nclav "
            f"validate: median {median(p.base for p in pairs):.2f} s; ratio median "
            f"{median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}; "
            "target <= 1.5)"
        )
        print(
            f"  CPU seconds, push / baseline: median {median(cpu_ratios):.2f} "
            f"(min {min(cpu_ratios):.2f}, max {max(cpu_ratios):.2f}): what the ratio is on an "
            "idle machine"
        )
        print(
            "  phases (median, from the server's log): "
            + ", ".join(
                f"{name} {median(p.phases[name] for p in pairs):.2f} s" for name in PHASE_NAMES
            )
        )
        seeded_base, seeded = big["seeded"]
        print(
            f"  (with the tree's applied state seeded, a no-op plan: {seeded:.2f} s, "
            f"ratio {seeded / seeded_base:.2f})"
        )
        share = big["second_bytes"] / big["first_bytes"]
        print(
            f"fetched pack bytes: first push {big['first_bytes']:.0f}, second push (one file) "
            f"{big['second_bytes']:.0f} = {share:.1%} (target <= 10%)"
        )


if __name__ == "__main__":
    main()
