"""Benchmark: apply makespan of a partition DAG with real terraform, at 1, 2 and 4 workers.

The tree: ``--enclaves`` enclaves (default 5) sharing ``--partitions`` partitions (default 50),
all on cloud: local. Inside enclave i, partition k > 0 reads an output of partition (k-1)//3
(a ternary tree through the enclave's own exports), and p0 of enclave i reads p0 of enclave
i-1 (a chain across enclaves). Each partition is a terraform_data resource whose creation runs
a local-exec ``sleep --sleep`` (default 1 s), so the work outweighs process overhead.

For each worker count, a fresh NCLAV_HOME and a real local server (``LocalRuntime``, as
``nclav serve --cloud local`` wires it); ``POST /reconcile?wait`` applies the tree from empty
state, timed from request to final answer (the makespan). Then, from the API alone:
- each partition's work is the measured duration of its IaC run (started_at .. finished_at);
- the critical path is the longest path through the run's step DAG (``GET /runs/{id}``
  steps' ``depends_on``), weighing each step by its IaC work (other steps weigh 0);
- the lower bound is max(critical path, total work / workers); ratio = makespan / bound
  (target: at most 1.3).
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from bench_server import local_server, timed  # noqa: E402

ENCLAVE = """id: b{i}
name: Bench enclave {i}
cloud: local
region: local-1
network:
  vpc_cidr: "10.200.{i}.0/24"
  subnets: ["10.200.{i}.0/26"]
exports:
  - name: api
    target_partition: p0
    type: http
    to: any_enclave
    auth: token
{exports}imports:
{imports}"""

SELF_EXPORT = """  - name: x{k}
    target_partition: p{k}
    type: http
    to: {{enclave: b{i}}}
    auth: none
"""

IMPORT = """  - from: b{src}
    export_name: {export}
    alias: {alias}
"""

PARTITION = """id: p{k}
name: Partition {k}
backend: terraform
{produces}inputs:
  dep: "{dep}"
declared_outputs: [{outputs}]
"""

MAIN_TF = """variable "nclav_enclave" {{ type = string }}
variable "nclav_partition" {{ type = string }}
variable "dep" {{ type = string }}

resource "terraform_data" "work" {{
  input = "${{var.nclav_enclave}}-${{var.nclav_partition}}"
  provisioner "local-exec" {{
    command = "sleep {sleep}"
  }}
}}

{outputs}"""

HTTP_OUTPUTS = """output "hostname" { value = "${terraform_data.work.output}.local" }
output "port" { value = 443 }
"""
ID_OUTPUT = 'output "id" { value = terraform_data.work.output }\n'


def parent(k: int) -> int:
    return (k - 1) // 3


def write_dag_tree(root: str, partitions: int, enclaves: int, sleep: float) -> None:
    """``partitions`` spread over ``enclaves`` (the first ones get one more when uneven)."""
    for i in range(enclaves):
        count = partitions // enclaves + (1 if i < partitions % enclaves else 0)
        parents = sorted({parent(k) for k in range(1, count)})
        edir = os.path.join(root, f"b{i}")
        os.makedirs(edir, exist_ok=True)
        exports = "".join(SELF_EXPORT.format(i=i, k=k) for k in parents)
        imports = "".join(IMPORT.format(src=i, export=f"x{k}", alias=f"a{k}") for k in parents)
        if i > 0:
            imports += IMPORT.format(src=i - 1, export="api", alias="up")
        with open(os.path.join(edir, "config.yml"), "w") as fh:
            fh.write(ENCLAVE.format(i=i, exports=exports, imports=imports or "  []\n"))
        for k in range(count):
            pdir = os.path.join(edir, f"p{k}")
            os.makedirs(pdir, exist_ok=True)
            http = k == 0 or k in parents
            if k > 0:
                dep = f"{{{{ a{parent(k)}.hostname }}}}"
            else:
                dep = "{{ up.hostname }}" if i > 0 else "none"
            with open(os.path.join(pdir, "config.yml"), "w") as fh:
                fh.write(
                    PARTITION.format(
                        k=k,
                        produces="produces: http\n" if http else "",
                        dep=dep,
                        outputs="hostname, port" if http else "id",
                    )
                )
            with open(os.path.join(pdir, "main.tf"), "w") as fh:
                outputs = HTTP_OUTPUTS if http else ID_OUTPUT
                fh.write(MAIN_TF.format(sleep=f"{sleep:g}", outputs=outputs))


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def critical_path(steps: list[dict[str, Any]], work: dict[str, float]) -> float:
    """Longest path through the step DAG; steps come in a valid execution order."""
    finish: dict[str, float] = {}
    for step in steps:
        start = max((finish[d] for d in step["depends_on"] if d in finish), default=0.0)
        finish[step["step_id"]] = start + work.get(step["step_id"], 0.0)
    return max(finish.values(), default=0.0)


def fifo_makespan(steps: list[dict[str, Any]], work: dict[str, float], workers: int) -> float:
    """The makespan of an ideal FIFO list scheduler on the same DAG and work, zero overhead."""
    waiting = {s["step_id"]: len(s["depends_on"]) for s in steps}
    dependents: dict[str, list[str]] = {s["step_id"]: [] for s in steps}
    for s in steps:
        for d in s["depends_on"]:
            dependents[d].append(s["step_id"])
    ready = deque(sid for sid, n in waiting.items() if n == 0)
    running: list[tuple[float, str]] = []
    now, free = 0.0, workers

    def complete(sid: str) -> None:
        for other in dependents[sid]:
            waiting[other] -= 1
            if waiting[other] == 0:
                ready.append(other)

    while ready or running:
        while ready and (free > 0 or work.get(ready[0], 0.0) == 0.0):
            sid = ready.popleft()
            if work.get(sid, 0.0) == 0.0:
                complete(sid)
            else:
                heapq.heappush(running, (now + work[sid], sid))
                free -= 1
        if running:
            now, sid = heapq.heappop(running)
            free += 1
            complete(sid)
    return now


@dataclass(frozen=True)
class Row:
    workers: int
    makespan: float
    critical: float
    total: float
    partitions: int
    steps: int
    fifo: float

    @property
    def bound(self) -> float:
        return max(self.critical, self.total / self.workers)

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound


def one(tree: str, workers: int) -> Row:
    with local_server(workers=workers) as (client, _home):
        makespan, run = timed(
            lambda: client.call("POST", "/reconcile?wait=3600", {"enclaves_dir": tree})
        )
        if run["status"] != "succeeded":
            raise SystemExit(f"run {run['id']} ended {run['status']}: {run['errors']}")
        steps: list[dict[str, Any]] = client.call("GET", f"/runs/{run['id']}")["steps"]
        work: dict[str, float] = {}
        for step in steps:
            if step["action"] != "provision_partition":
                continue
            url = f"/enclaves/{step['enclave_id']}/partitions/{step['target']}/iac/runs"
            iac = [r for r in client.call("GET", url) if r["reconcile_run_id"] == run["id"]]
            if len(iac) != 1:
                raise SystemExit(f"{step['step_id']}: expected one IaC run, found {len(iac)}")
            work[step["step_id"]] = seconds(iac[0]["finished_at"]) - seconds(iac[0]["started_at"])
    return Row(
        workers=workers,
        makespan=makespan,
        critical=critical_path(steps, work),
        total=sum(work.values()),
        partitions=len(work),
        steps=len(steps),
        fifo=fifo_makespan(steps, work, workers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--enclaves", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds of work per partition")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if shutil.which("terraform") is None and shutil.which("tofu") is None:
        raise SystemExit("bench_apply needs terraform (or tofu) on PATH")

    tree = tempfile.mkdtemp(prefix="nclav-bench-tree-")
    try:
        write_dag_tree(tree, args.partitions, args.enclaves, args.sleep)
        print(
            f"tree: {args.partitions} partitions in {args.enclaves} enclaves, "
            f"local-exec sleep {args.sleep:g} s each; terraform, fresh NCLAV_HOME per row",
            flush=True,
        )
        started = time.perf_counter()
        rows: list[Row] = []
        for workers in counts:
            rows.append(one(tree, workers))
            r = rows[-1]
            print(
                f"  {workers} worker(s): {r.makespan:.1f} s "
                f"({r.partitions} partitions, {r.steps} steps)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(tree, ignore_errors=True)

    head = (
        f"{'workers':>7} {'makespan':>9} {'crit.path':>9} {'total work':>10} "
        f"{'lower bnd':>9} {'ratio':>6} {'fifo sim':>9}"
    )
    print(head)
    for r in rows:
        print(
            f"{r.workers:>7} {r.makespan:>8.1f}s {r.critical:>8.1f}s "
            f"{r.total:>9.1f}s {r.bound:>8.1f}s {r.ratio:>6.2f} {r.fifo:>8.1f}s"
        )
    worst = max(r.ratio for r in rows)
    verdict = "ok" if worst <= 1.3 else "ABOVE TARGET"
    elapsed = time.perf_counter() - started
    print(f"worst ratio {worst:.2f} (target <= 1.3: {verdict}); benchmark took {elapsed:.0f} s")
    print(
        "lower bound = max(critical path, total work / workers), work = IaC run durations; "
        "fifo sim = the same DAG and work on an ideal zero-overhead FIFO scheduler"
    )


if __name__ == "__main__":
    main()
