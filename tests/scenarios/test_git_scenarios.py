"""Git-push reconcile (issue 15) on every runtime of the scenario suite.

A private repository on a real git server (``git http-backend``, tests/gitserver.py), commits
pushed with the real ``git`` command, the source set through ``PUT /source`` (its token going
to the runtime's secret store), GitHub (HMAC-signed) and GitLab (token) push deliveries built
from the hosts' example payloads, POSTed to the runtime's API with the webhook secret read
from where the runtime keeps it, and real terraform. The webhook only verifies, records and
enqueues: the fetch and the run happen in the runtime's worker, which takes the git source's
control message from its queue (thread queue, SQS, Cloud Tasks, Storage Queues); on a cloud
the delivery goes to another sandbox than the worker's (``another_sandbox``), as the API and
worker functions are.

The poll is off (``NCLAV_GIT_POLL_S=0``): the first scheduled tick after ``PUT /source``
would otherwise ask the remote for the head and race the delivery this suite is about (the
poll is covered in tests/e2e/test_git_source.py and tests/aws/test_git_push.py).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import require_terraform

from gitserver import GitServer, Repo, github_headers, github_push, gitlab_headers, gitlab_push
from nclav.gitsource.source import TOKEN_SECRET

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from runtimes import Reply, Runtime

require_terraform()
pytestmark = pytest.mark.terraform

TOKEN = "ghp_scenario0123456789abcdef"
ZERO = "0" * 40
MAIN = "refs/heads/main"
THING = 'resource "terraform_data" "thing" { input = "x" }\n'


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the runtime is built (autouse fixtures come first): the webhook alone, and
    pushes to other branches planned as previews."""
    monkeypatch.setenv("NCLAV_GIT_POLL_S", "0")
    monkeypatch.setenv("NCLAV_GIT_PREVIEW_BRANCHES", "true")


@pytest.fixture(name="git_server")
def git_server_fixture(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "git", token=TOKEN) as server:  # a private repository
        server.create("acme/infra")
        yield server


def partition(eid: str, pid: str, main_tf: str = THING) -> dict[str, str]:
    base = f"enclaves/{eid}"
    variables = 'variable "nclav_enclave" { type = string }\n'
    variables += 'variable "nclav_partition" { type = string }\n'
    return {
        f"{base}/config.yml": f"id: {eid}\nname: {eid}\ncloud: local\nregion: local-1\n",
        f"{base}/{pid}/config.yml": f"id: {pid}\nname: {pid}\nbackend: terraform\n",
        f"{base}/{pid}/main.tf": variables + main_tf,
    }


def push(rt: Runtime, url: str, before: str, after: str, host: str = "github") -> str:
    """A push delivery for ``after`` as GitHub (signed) or GitLab (its token) sends it; the
    delivery id."""
    delivery, secret = str(uuid.uuid4()), rt.webhook_secret()
    if host == "github":
        body = github_push(url, MAIN, before, after)
        headers = github_headers(secret, body, delivery)
    else:
        body, headers = gitlab_push(url, MAIN, before, after), gitlab_headers(secret, delivery)
    answer = rt.webhook(f"/webhooks/{host}", body, headers)
    assert answer.status == 202, answer
    assert (answer.json["status"], answer.json["commit"]) == ("queued", after), answer
    return delivery


def run_of(rt: Runtime, commit: str) -> dict[str, Any]:
    """The run the source started for ``commit`` (the runtime's workers carried on to it)."""

    def found() -> dict[str, Any] | None:
        runs = [r for r in rt.ok("GET", "/runs") if (r.get("origin") or {}).get("commit")]
        return next((r for r in runs if r["origin"]["commit"] == commit), None)

    return rt.until(found, timeout=60)  # type: ignore[no-any-return]


def test_pushes_are_fetched_and_applied_by_the_runtimes_workers(
    runtime: Runtime, git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url, token=TOKEN)

    # -- the source: PUT /source, its token to the runtime's secret store -----------------------
    doc = runtime.ok(
        "PUT", "/source", {"url": url, "branch": "main", "path": "enclaves", "token": TOKEN}
    )
    assert (doc["url"], doc["branch"], doc["path"], doc["token"]) == (url, "main", "enclaves", True)
    assert runtime.secrets.get(TOKEN_SECRET) == TOKEN
    assert TOKEN not in str(runtime.ok("GET", "/source"))

    # -- a push: the webhook enqueues, a worker fetches exactly that commit, terraform applies --
    first = repo.commit("Add alpha", partition("alpha", "p"))
    repo.push()
    fetches_before = len(git_server.requests)
    with runtime.another_sandbox():  # the API's sandbox is not the worker's
        delivery = push(runtime, url, ZERO, first)
    started = run_of(runtime, first)
    run = runtime.wait(started, timeout=90)
    assert run["status"] == "succeeded", run
    assert run["trigger"] == "git-push"
    assert run["origin"] == {
        "repository": url,
        "ref": MAIN,
        "commit": first,
        "author": "Ada Lovelace",
        "message": "Add alpha",
        "delivery": delivery,
    }
    # The worker fetched from the private repository: with the token from the secret store.
    assert len(git_server.requests) > fetches_before
    (applied,) = runtime.iac_runs("alpha", "p")
    assert (applied["operation"], applied["status"]) == ("provision", "succeeded"), applied
    source = runtime.until(lambda: (d := runtime.ok("GET", "/source"))["pending"] is None and d)
    assert source["applied"]["commit"] == first and source["applied"]["status"] == "succeeded"

    # The same delivery again (a redelivery keeps its id), and a bad signature: no new work.
    body = github_push(url, MAIN, ZERO, first)
    again = runtime.webhook(
        "/webhooks/github", body, github_headers(runtime.webhook_secret(), body, delivery)
    )
    assert (again.status, again.json["status"]) == (200, "duplicate"), again
    forged = runtime.webhook("/webhooks/github", body, github_headers("forged", body, "x-1"))
    assert forged.status == 401, forged

    # -- a second push (from GitLab) changing the tree: only the change is applied --------------
    second = repo.commit("Add alpha/q", partition("alpha", "q"))
    repo.push()
    gitlab = push(runtime, url, first, second, host="gitlab")
    changed = runtime.wait(run_of(runtime, second), timeout=90)
    assert changed["status"] == "succeeded", changed
    assert changed["origin"]["delivery"] == gitlab, changed["origin"]
    assert changed["id"] != run["id"]
    provisioned = [s["step_id"] for s in changed["steps"] if "partition" in s["step_id"]]
    assert provisioned == ["provision_partition:alpha/q"], changed["steps"]
    assert len(runtime.iac_runs("alpha", "p")) == 1  # untouched: no terraform for it
    assert [r["status"] for r in runtime.iac_runs("alpha", "q")] == ["succeeded"]
    assert set(runtime.enclaves()["alpha"]["partitions"]) == {"p", "q"}

    # -- a push whose delivery was lost: an operator's sync_source message on the queue --------
    third = repo.commit("Change alpha/q", partition("alpha", "q", THING.replace('"x"', '"y"')))
    repo.push()
    runtime.send_control({"kind": "sync_source"})
    synced = runtime.wait(run_of(runtime, third), timeout=90)
    assert synced["status"] == "succeeded", synced
    assert synced["trigger"] == "git-sync" and synced["origin"]["delivery"] is None, synced
    assert [r["status"] for r in runtime.iac_runs("alpha", "q")] == ["succeeded", "succeeded"]
    assert len(runtime.iac_runs("alpha", "p")) == 1

    # -- a push deleting the enclaves directory: held for approval, nothing destroyed -----------
    fourth = repo.commit("Remove everything", {"enclaves": None})
    repo.push()
    push(runtime, url, third, fourth)
    held = run_of(runtime, fourth)
    held = runtime.until(lambda: (r := runtime.run(held["id"]))["status"] != "queued" and r)
    assert held["status"] == "awaiting_approval", held
    assert set(runtime.enclaves()) == {"alpha"}
    assert len(runtime.iac_runs("alpha", "p")) == 1 and len(runtime.iac_runs("alpha", "q")) == 2


def test_a_webhook_secret_rotated_in_one_sandbox_is_taken_at_once_by_another(
    runtime: Runtime,
) -> None:
    """A cloud runtime's API runs in many sandboxes; the operator's rotation reaches one of
    them, and the git host signs with the new secret from then on (it never retries)."""
    ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()

    def ping_with(secret: str) -> Reply:
        headers = github_headers(secret, ping, str(uuid.uuid4()), event="ping")
        return runtime.webhook("/webhooks/github", ping, headers)

    assert runtime.ok("GET", "/source")["webhook"]["secret"]  # where to read it (made now)
    old = runtime.webhook_secret()
    assert ping_with(old).status == 200  # this sandbox has read its secret
    with runtime.another_sandbox():
        new = runtime.ok("POST", "/source/webhook-secret")["webhook_secret"]
    assert new != old and runtime.webhook_secret() == new
    taken = ping_with(new)
    assert taken.status == 200, taken  # the warm sandbox read the rotated secret again
    assert ping_with(old).status == 401  # ... and no longer takes the old one
    assert ping_with("forged").status == 401


def test_of_a_burst_of_pushes_only_the_branch_head_runs(
    runtime: Runtime, git_server: GitServer, tmp_path: Path
) -> None:
    """Three pushes, then their three deliveries: whichever order the workers take the
    messages in, one run, of the newest commit; the others are superseded by it."""
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url, token=TOKEN)
    runtime.ok("PUT", "/source", {"url": url, "token": TOKEN})
    config = "enclaves/solo/config.yml"
    commits = []
    for n in (1, 2, 3):
        text = f"id: solo\nname: solo v{n}\ncloud: local\nregion: local-1\n"
        commits.append(repo.commit(f"solo v{n}", {config: text}))
        repo.push()
    for before, after in zip([ZERO, *commits[:-1]], commits, strict=True):
        push(runtime, url, before, after)
    final = runtime.wait(run_of(runtime, commits[-1]), timeout=60)
    assert final["status"] == "succeeded", final
    doc = runtime.until(lambda: (d := runtime.ok("GET", "/source"))["pending"] is None and d)
    runs = [r for r in runtime.ok("GET", "/runs") if r.get("origin")]
    assert [r["origin"]["commit"] for r in runs] == [commits[-1]], runs
    assert runtime.enclaves()["solo"]["desired"]["name"] == "solo v3"
    outcomes = {p["commit"]: p["outcome"] for p in doc["pushes"] if p["commit"] != commits[-1]}
    assert outcomes == dict.fromkeys(commits[:2], f"superseded by {commits[-1]}"), doc["pushes"]


def test_a_push_to_another_branch_is_planned_by_a_worker_and_never_applied(
    runtime: Runtime, git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url, token=TOKEN)
    runtime.ok("PUT", "/source", {"url": url, "token": TOKEN})
    commit = repo.commit("Try beta", partition("beta", "p"))
    repo.push("feature")
    body = github_push(url, "refs/heads/feature", ZERO, commit)
    headers = github_headers(runtime.webhook_secret(), body, str(uuid.uuid4()))
    answer = runtime.webhook("/webhooks/github", body, headers)
    assert (answer.status, answer.json["status"]) == (202, "preview queued"), answer

    def outcome() -> str | None:
        found = next(p for p in runtime.ok("GET", "/source")["pushes"] if p["commit"] == commit)
        return None if found["outcome"] == "preview queued" else str(found["outcome"])

    # The preview_source message, planned by the worker (a dry run: no terraform, no run).
    assert runtime.until(outcome, timeout=60) == "preview: 2 to add, 0 to change, 0 to destroy"
    assert [r for r in runtime.ok("GET", "/runs") if r.get("origin")] == []
    assert runtime.ok("GET", "/enclaves") == []
