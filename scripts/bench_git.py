"""Git-push reconcile benchmark (issue 15): webhook answer time, push-to-plan, incremental fetch.

Everything is real and local: ``git http-backend`` behind tests/gitserver.py's wrapper, commits
pushed with ``git``, a local nclav server (``LocalRuntime``, the engine ``nclav serve`` runs)
following the repository, signed GitHub push deliveries built from the octokit example.

1. Webhook answer time: 50 deliveries (50 commits) sent at once to a real ``nclav serve``
   process, each on its own connection; p50/p99 of the time to the full answer.
   Target: p99 <= 100 ms.
2. Push-to-plan: the 1,000 x 10 synthetic tree (scripts/synth_tree.py, as bench_core makes
   it) committed under ``enclaves/``; time from the webhook to the run's stored plan (the run
   has begun), as a ratio to ``git clone --depth 1`` + ``nclav validate`` of the same commit run
   alone (best of 3; push-to-plan best of 2). Measured on a fresh server (the plan's 14,900
   steps stored; the server is stopped as the apply begins), and again with the tree's
   applied state seeded (as bench_noop does: a no-op plan against 1,000 applied enclaves).
   Target: <= 1.5.
3. A second push changing one file: pack bytes the second fetch added to the source's object
   store, as a share of the first's. Target: <= 10%.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path[:0] = [
    str(HERE),
    str(HERE.parent / "tests"),
    str(HERE.parent / "tests" / "e2e"),
    str(HERE.parent / "core"),
]

from gitserver import (  # type: ignore[import-not-found]  # noqa: E402
    GitServer,
    Repo,
    git,
    github_headers,
    github_push,
)
from nclav.config import load_directory  # noqa: E402
from nclav.gitsource.settings import GitSettings  # noqa: E402
from nclav.graph import validate_graph  # noqa: E402
from nclav.local.runtime import LocalOptions, LocalRuntime  # noqa: E402
from nclav.local.sqlite_store import SqliteStateStore  # noqa: E402
from nclav.transitions import simulate_apply  # noqa: E402
from synth_tree import write_tree  # noqa: E402

SECRET = "bench-webhook-secret"
ZERO = "0" * 40


class Server:
    def __init__(self, home: Path, url: str) -> None:
        self.token = secrets.token_hex(32)
        options = LocalOptions(
            home=home,
            port=0,
            git=GitSettings(url=url, poll_s=0),
            git_webhook_secret=SECRET,
        )
        self.runtime = LocalRuntime(options, self.token)
        base = urlsplit(self.runtime.start())
        self.host, self.port = str(base.hostname), int(base.port or 80)
        self.url = url

    def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def deliver(self, before: str, after: str) -> tuple[float, int]:
        body = github_push(self.url, "refs/heads/main", before, after)
        headers = github_headers(SECRET, body, str(uuid.uuid4()))
        started = time.perf_counter()
        status, _ = self.call("POST", "/webhooks/github", body, headers)
        return time.perf_counter() - started, status

    def latest_run(self) -> dict[str, object] | None:
        import json

        _, body = self.call("GET", "/runs?limit=1")
        runs = json.loads(body)
        return runs[0] if runs else None

    def stop(self) -> None:
        self.runtime.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def webhook_latency(root: Path, gits: GitServer, deliveries: int) -> list[float]:
    """Signed deliveries sent at once to a real ``nclav serve`` process (its own GIL)."""
    from serve_harness import Server as ServeProcess  # type: ignore[import-not-found]

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


def push_to_plan(root: Path, gits: GitServer, enclaves: int, partitions: int) -> dict[str, float]:
    gits.create("bench/big")
    url = gits.url("bench/big")
    repo = Repo(root / "big", url)
    write_tree(str(repo.path / "enclaves"), enclaves, partitions)
    first = repo.commit("the synthetic tree")
    repo.push()

    # Baseline: a shallow clone and `nclav validate` of the same commit, run alone (best of 3).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    baselines: list[float] = []
    for attempt in range(3):
        clone = root / f"clone{attempt}"
        started = time.perf_counter()
        git("clone", "-q", "--depth", "1", url, str(clone), cwd=root)
        done = subprocess.run(
            [sys.executable, "-m", "nclav", "validate", str(clone / "enclaves")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        baselines.append(time.perf_counter() - started)
        assert done.returncode == 0, done.stdout + done.stderr
    baseline = min(baselines)

    def to_plan(home: Path, seeded: bool) -> float:
        home.mkdir()
        if seeded:
            applied = simulate_apply(
                validate_graph(load_directory(str(repo.path / "enclaves"))), {}
            )
            store = SqliteStateStore(home / "state.db")
            try:
                for state in applied.values():
                    store.put_enclave(state, None)
            finally:
                store.close()
        server = Server(home, url)
        try:
            started = time.perf_counter()
            _took, status = server.deliver(ZERO, first)
            assert status == 202, status
            while True:  # the run's plan is stored when the run has begun
                run = server.latest_run()
                if run is not None and run["status"] != "queued":
                    break
                time.sleep(0.01)
            return time.perf_counter() - started
        finally:
            server.stop()  # a fresh tree's apply has begun: stop it, no need to finish

    fresh = min(to_plan(root / f"home-fresh{i}", seeded=False) for i in range(2))
    seeded = to_plan(root / "home-seeded", seeded=True)

    # A second push changing one file, to the server that fetched the first.
    home = root / "home-seeded"  # its run was a no-op and is over
    server = Server(home, url)
    try:
        first_bytes = pack_bytes(home)
        config = repo.path / "enclaves" / "group000" / "e0000" / "config.yml"
        config.write_text(config.read_text().replace("Synthetic enclave 0", "Enclave zero"))
        second = repo.commit("rename e0000")
        repo.push()
        _took, status = server.deliver(first, second)
        assert status == 202
        server.runtime.queue.wait_idle(60)
        while pack_bytes(home) == first_bytes:
            time.sleep(0.05)
        second_bytes = pack_bytes(home) - first_bytes
    finally:
        server.stop()
    return {
        "baseline": baseline,
        "to_plan": fresh,
        "to_plan_seeded": seeded,
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
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nclav-bench-git-"))
    try:
        with GitServer(root / "git") as gits:
            times = webhook_latency(root, gits, args.deliveries)
            big = push_to_plan(root, gits, args.enclaves, args.partitions)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
    ratio = big["to_plan"] / big["baseline"]
    share = big["second_bytes"] / big["first_bytes"]
    print(
        f"webhook answer, {args.deliveries} concurrent deliveries: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, mean {statistics.mean(times) * 1000:.1f} ms (target p99 <= 100 ms)"
    )
    print(
        f"push-to-plan, {args.enclaves} x {args.partitions} tree: {big['to_plan']:.2f} s; "
        f"git clone --depth 1 + nclav validate: {big['baseline']:.2f} s; "
        f"ratio {ratio:.2f} (target <= 1.5)"
    )
    print(
        f"  (with the tree's applied state seeded, a no-op plan: {big['to_plan_seeded']:.2f} s, "
        f"ratio {big['to_plan_seeded'] / big['baseline']:.2f})"
    )
    print(
        f"fetched pack bytes: first push {big['first_bytes']:.0f}, second push (one file) "
        f"{big['second_bytes']:.0f} = {share:.1%} (target <= 10%)"
    )


if __name__ == "__main__":
    main()
