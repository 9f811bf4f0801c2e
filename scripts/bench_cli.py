"""Benchmark the CLI: ``nclav --help`` cold start, and ``nclav diff`` on the synthetic tree.

1. ``nclav --help`` wall time: best (and median) of N fresh processes, i.e. the price of
   every CLI call before it does anything.
2. ``nclav diff TREE`` against a real ``nclav serve`` process on a loopback port, TREE being
   the 1,000-enclave x 10-partition synthetic tree (scripts/synth_tree.py): the first call
   packs, uploads and dry-runs; later calls find the bundle on the server and skip the upload.
   Each is a fresh CLI process, timed from the outside. The same three phases are then timed
   in this process (pack, upload, dry-run) to show where the time goes.

Usage: .venv/bin/python scripts/bench_cli.py [--runs 10] [--enclaves 1000] [--partitions 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from synth_tree import write_tree  # noqa: E402


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m nclav``."""
    script = Path(sys.executable).with_name("nclav")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nclav"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr.decode()}")
    return took


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NCLAV_URL", "NCLAV_TOKEN")}
    env["CHECKPOINT_DISABLE"] = "1"
    log = home / "serve.log"
    argv = [sys.executable, "-m", "nclav", "serve", "--port", "0", "--home", str(home)]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "listening on " in line:
                return proc, line.split("listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            sys.exit(f"nclav serve exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    sys.exit("nclav serve did not start within 60s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="processes per measurement")
    parser.add_argument("--enclaves", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    args = parser.parse_args()
    cli = cli_command()
    env = {k: v for k, v in os.environ.items() if k not in ("NCLAV_URL", "NCLAV_TOKEN")}

    timed([*cli, "--help"], env)  # warm the OS file cache: cold means a new process
    helps = [timed([*cli, "--help"], env) for _ in range(args.runs)]
    print(
        f"nclav --help (new process, {args.runs} runs): best {min(helps) * 1000:.0f} ms, "
        f"median {statistics.median(helps) * 1000:.0f} ms"
    )

    scratch = Path(tempfile.mkdtemp(prefix="nclav-bench-cli-"))
    proc = None
    try:
        tree = scratch / "enclaves"
        write_tree(str(tree), args.enclaves, args.partitions)
        home = scratch / "home"
        home.mkdir()
        proc, url = start_server(home)
        env.update(NCLAV_URL=url, NCLAV_TOKEN=(home / "token").read_text().strip())
        size = f"{args.enclaves} enclaves x {args.partitions} partitions"
        first = timed([*cli, "diff", str(tree)], env)
        print(f"nclav diff ({size}), first call (pack + upload + dry-run): {first:.2f} s")
        again = [timed([*cli, "diff", str(tree)], env) for _ in range(max(args.runs // 2, 1))]
        print(
            f"nclav diff ({size}), bundle already on the server (pack + dry-run): "
            f"best {min(again):.2f} s, median {statistics.median(again):.2f} s"
        )
        phases(tree, url, env["NCLAV_TOKEN"])
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def phases(tree: Path, url: str, token: str) -> None:
    """Where a first ``nclav diff`` spends its time, measured in this process."""
    from nclav.cli.client import Client
    from nclav.cli.reconcile import pack, upload

    api = Client(url, lambda: (token, "bench"), timeout_s=600)
    start = time.perf_counter()
    digest, data = pack(str(tree))
    packed = time.perf_counter()
    api.request("POST", "/bundles", data=data, content_type="application/gzip", timeout_s=600)
    uploaded = time.perf_counter()
    upload(api, digest, data)  # what later calls do: GET /bundles/{digest}, 200, no upload
    checked = time.perf_counter()
    doc = api.post("/reconcile/dry-run", {"bundle": digest}, timeout_s=600)
    planned = time.perf_counter()
    print(
        f"  phases in-process: pack {packed - start:.2f} s ({len(data) / 1e6:.1f} MB gzip), "
        f"upload {uploaded - packed:.2f} s (already there: {(checked - uploaded) * 1000:.0f} ms), "
        f"dry-run {planned - checked:.2f} s ({len(doc['changes'])} changes)"
    )


if __name__ == "__main__":
    main()
