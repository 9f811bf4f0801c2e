"""Git-push reconcile (issue 15) through a real ``nclav serve``, a real git server
(``git http-backend``, tests/gitserver.py), commits pushed with the real ``git`` command,
webhook bodies built from real GitHub and GitLab payloads, and real terraform.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from serve_harness import require_terraform, server_factory_fixture, wait_until  # noqa: F401

from gitserver import (
    GitServer,
    Repo,
    StatusHost,
    github_headers,
    github_push,
    gitlab_headers,
    gitlab_push,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from serve_harness import Server

require_terraform()
pytestmark = pytest.mark.terraform

SECRET = "s3cret-webhook-value"
TOKEN = "ghp_testtoken0123456789"
ZERO = "0" * 40


def enclave(eid: str, name: str | None = None) -> dict[str, str]:
    text = f"id: {eid}\nname: {name or eid.title()}\ncloud: local\nregion: local-1\n"
    return {f"enclaves/{eid}/config.yml": text}


HUB = {
    "enclaves/hub/config.yml": (
        "id: hub\nname: Network hub\ncloud: local\nregion: local-1\n"
        "exports:\n  - name: resolver\n    target_partition: resolver\n    type: tcp\n"
        "    to: any_enclave\n    auth: none\n"
    ),
    "enclaves/hub/resolver/config.yml": (
        "id: resolver\nname: DNS resolver\nproduces: tcp\ninputs:\n  zone: hub.internal\n"
        "declared_outputs: [hostname, port]\n"
    ),
    "enclaves/hub/resolver/main.tf": (
        'variable "nclav_enclave" { type = string }\n'
        'variable "nclav_partition" { type = string }\n'
        'variable "zone" { type = string }\n'
        'resource "terraform_data" "resolver" { input = "ns1.${var.zone}" }\n'
        'output "hostname" { value = terraform_data.resolver.output }\n'
        'output "port" { value = 53 }\n'
    ),
}


@pytest.fixture(name="git_server")
def git_server_fixture(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "git") as server:
        server.create("acme/infra")
        yield server


def source_env(url: str, **extra: str) -> dict[str, str]:
    env = {
        "NCLAV_GIT_URL": url,
        "NCLAV_GIT_BRANCH": "main",
        "NCLAV_GIT_PATH": "enclaves",
        "NCLAV_GIT_WEBHOOK_SECRET": SECRET,
        "NCLAV_GIT_POLL_S": "0",
    }
    env.update(extra)
    return env


def deliver(
    server: Server, url: str, ref: str, before: str, after: str, **kwargs: Any
) -> tuple[Any, str]:
    delivery = kwargs.pop("delivery", None) or str(uuid.uuid4())
    body = github_push(url, ref, before, after, **kwargs)
    response = server.request(
        "POST", "/webhooks/github", body, auth=False, headers=github_headers(SECRET, body, delivery)
    )
    return response, delivery


def git_runs(server: Server) -> list[dict[str, Any]]:
    return [r for r in server.ok("GET", "/runs") if r.get("origin")]


def applied_run(server: Server, commit: str, timeout: float = 120.0) -> dict[str, Any]:
    """The run the source started for ``commit``, once final."""

    def found() -> dict[str, Any] | None:
        return next((r for r in git_runs(server) if r["origin"]["commit"] == commit), None)

    run = wait_until(found, timeout, f"a run for commit {commit}", interval=0.1)
    return server.wait_run(run["id"], timeout)


def settle(server: Server, timeout: float = 30.0) -> dict[str, Any]:
    """GET /source once nothing is pending."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (doc := server.ok("GET", "/source"))["pending"] is None and doc,
        timeout,
        "the source has nothing pending",
    )


def test_a_push_is_applied_and_a_redelivery_bad_signature_tag_and_ping_are_not(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    first = repo.commit("Add the network hub\n\nWith its resolver.", HUB)
    repo.push()
    server = server_factory(env=source_env(url))

    response, delivery = deliver(server, url, "refs/heads/main", ZERO, first)
    assert response.status == 202, response
    assert response.json["status"] == "queued"
    run = applied_run(server, first)
    assert run["status"] == "succeeded", run
    assert run["origin"] == {
        "repository": url,
        "ref": "refs/heads/main",
        "commit": first,
        "author": "Ada Lovelace",
        "message": "Add the network hub",
        "delivery": delivery,
    }
    assert run["trigger"] == "git-push"
    assert server.enclaves()["hub"]["partitions"]["resolver"]["resolved_outputs"] == {
        "hostname": "ns1.hub.internal",
        "port": "53",
    }
    assert len(server.iac_runs("hub", "resolver")) == 1  # terraform really ran
    started = [e for e in server.ok("GET", "/events") if e["kind"] == "ReconcileStarted"]
    assert started[0]["commit"] == first and started[0]["run_id"] == run["id"]
    doc = settle(server)
    assert doc["applied"]["commit"] == first and doc["applied"]["status"] == "succeeded"

    # -- the same delivery again (GitHub's manual redelivery keeps the id): nothing ------------
    again, _ = deliver(server, url, "refs/heads/main", ZERO, first, delivery=delivery)
    assert (again.status, again.json["status"]) == (200, "duplicate")
    # -- a new delivery of the applied commit: recorded, a no-op -------------------------------
    same, _ = deliver(server, url, "refs/heads/main", ZERO, first)
    assert same.status == 202
    doc = settle(server)
    assert doc["pushes"][0]["outcome"] == "no-op: already applied"

    # -- a bad signature: 401, nothing recorded but the counter --------------------------------
    body = github_push(url, "refs/heads/main", first, first)
    headers = github_headers("not-the-secret", body, "bad-delivery")
    refused = server.request("POST", "/webhooks/github", body, auth=False, headers=headers)
    assert refused.status == 401
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert (
        server.request("POST", "/webhooks/github", body, auth=False, headers=unsigned).status == 401
    )
    doc = server.ok("GET", "/source")
    assert doc["rejected_deliveries"] == 2
    assert all(p["delivery"] != "bad-delivery" for p in doc["pushes"])

    # -- a tag push, a branch deletion, a ping -------------------------------------------------
    tag, _ = deliver(server, url, "refs/tags/v1", ZERO, first, example=0)
    assert (tag.status, tag.json["status"]) == (202, "ignored: ref refs/tags/v1")
    gone, _ = deliver(server, url, "refs/heads/main", first, ZERO)
    assert (gone.status, gone.json["status"]) == (
        202,
        "ignored: branch deletion of refs/heads/main",
    )
    ping_body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    ping = server.request(
        "POST",
        "/webhooks/github",
        ping_body,
        auth=False,
        headers=github_headers(SECRET, ping_body, "ping-1", event="ping"),
    )
    assert ping.status == 200
    # Other routes still need the token; the webhook routes are the only ones without.
    assert server.request("GET", "/source", auth=False).status == 401
    assert len(git_runs(server)) == 1


def test_a_burst_of_five_pushes_runs_only_the_newest(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    server = server_factory(env=source_env(url))
    commits: list[tuple[str, str]] = []
    before = ZERO
    for i in range(5):
        sha = repo.commit(f"change {i}", enclave("app", f"App v{i}"))
        repo.push()
        commits.append((before, sha))
        before = sha
    answers: list[int] = []

    def send(pair: tuple[str, str]) -> None:
        answers.append(deliver(server, url, "refs/heads/main", *pair)[0].status)

    threads = [threading.Thread(target=send, args=(pair,)) for pair in commits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [202] * 5
    newest = commits[-1][1]
    run = applied_run(server, newest)
    assert run["status"] == "succeeded"
    doc = settle(server)
    time.sleep(1.0)  # any late run would have started by now
    assert [r["origin"]["commit"] for r in git_runs(server)] == [newest]
    assert server.enclaves()["app"]["desired"]["name"] == "App v4"
    outcomes = {p["commit"]: p["outcome"] for p in doc["pushes"] if p["commit"] != newest}
    assert outcomes and all(o == f"superseded by {newest}" for o in outcomes.values()), outcomes


def test_a_force_push_to_an_older_tree_is_applied(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    server = server_factory(env=source_env(url))
    old = repo.commit("v1", enclave("app", "App v1"))
    repo.push()
    assert deliver(server, url, "refs/heads/main", ZERO, old)[0].status == 202
    assert applied_run(server, old)["status"] == "succeeded"
    new = repo.commit("v2", enclave("app", "App v2"))
    repo.push()
    assert deliver(server, url, "refs/heads/main", old, new)[0].status == 202
    assert applied_run(server, new)["status"] == "succeeded"
    assert server.enclaves()["app"]["desired"]["name"] == "App v2"

    repo.push(force=True, ref=old)  # the branch goes back to the older tree
    response, _ = deliver(server, url, "refs/heads/main", new, old, forced=True)
    assert response.status == 202
    wait_until(
        lambda: len(git_runs(server)) == 3 and git_runs(server)[0]["status"] == "succeeded",
        60,
        "the force push's run",
    )
    assert git_runs(server)[0]["origin"]["commit"] == old
    assert server.enclaves()["app"]["desired"]["name"] == "App v1"
    # A late delivery of the newer (now dropped) commit changes nothing: the branch says old.
    late, _ = deliver(server, url, "refs/heads/main", old, new)
    assert late.status == 202
    doc = settle(server)
    assert doc["pushes"][0]["outcome"].startswith(("superseded by", "no-op"))
    assert len(git_runs(server)) == 3


def test_a_push_deleting_the_enclaves_directory_awaits_approval(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    server = server_factory(env=source_env(url))
    first = repo.commit("two enclaves", {**enclave("app"), **enclave("data")})
    repo.push()
    deliver(server, url, "refs/heads/main", ZERO, first)
    assert applied_run(server, first)["status"] == "succeeded"
    gone = repo.commit("remove everything", {"enclaves": None, "README.md": "empty\n"})
    repo.push()
    deliver(server, url, "refs/heads/main", first, gone)

    def held() -> dict[str, Any] | None:
        run = next((r for r in git_runs(server) if r["origin"]["commit"] == gone), None)
        return run if run and run["status"] == "awaiting_approval" else None

    wait_until(held, 30, "the destructive push waits for approval")
    assert set(server.enclaves()) == {"app", "data"}  # nothing destroyed


def test_a_webhook_lost_while_the_server_was_down_is_caught_by_the_poll(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    first = repo.commit("v1", enclave("app", "App v1"))
    repo.push()
    # Pull mode: no webhook at all; the poll alone applies the branch head.
    server = server_factory(env=source_env(url, NCLAV_GIT_POLL_S="1"))
    assert applied_run(server, first)["origin"]["delivery"] is None
    assert server.stop() == 0
    second = repo.commit("v2 while the server was down", enclave("app", "App v2"))
    repo.push()  # its webhook delivery failed: the server was down
    server.start()
    run = applied_run(server, second)
    assert run["status"] == "succeeded" and run["trigger"] == "git-poll"
    assert server.enclaves()["app"]["desired"]["name"] == "App v2"
    time.sleep(2.5)  # more polls: the applied head is not reconciled again
    assert len(git_runs(server)) == 2


def test_a_private_repository_with_a_token(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    with GitServer(tmp_path / "git", token=TOKEN) as private:
        private.create("acme/infra")
        url = private.url("acme/infra")
        repo = Repo(tmp_path / "work", url, token=TOKEN)
        sha = repo.commit("v1", enclave("app"))
        repo.push()

        # Without the token the fetch is refused, and the outcome says why.
        bare = server_factory(env=source_env(url))
        deliver(bare, url, "refs/heads/main", ZERO, sha)
        doc = settle(bare)
        assert "refused the credentials" in doc["pushes"][0]["outcome"]
        assert git_runs(bare) == []

        server = server_factory(env=source_env(url, NCLAV_GIT_TOKEN=TOKEN))
        deliver(server, url, "refs/heads/main", ZERO, sha)
        assert applied_run(server, sha)["status"] == "succeeded"
        doc = server.ok("GET", "/source")
        assert doc["token"] is True
        # The token is in the secret store (0600 in a 0700 directory) and nowhere else.
        secrets = server.home / "secrets"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
        assert stat.S_IMODE((secrets / "git-token").stat().st_mode) == 0o600
        assert TOKEN not in json.dumps(doc)
        assert TOKEN not in (server.home / "blobs" / "git" / "source.json").read_text()
        assert TOKEN not in server.stderr()
        assert TOKEN not in json.dumps(server.ok("GET", "/runs"))


def test_commit_statuses_reach_github_and_gitlab_in_their_documented_shapes(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    host = StatusHost(TOKEN)
    try:
        sha = repo.commit("v1", enclave("app"))
        repo.push()
        github = server_factory(
            env=source_env(
                url,
                NCLAV_GIT_TOKEN=TOKEN,
                NCLAV_GIT_PROVIDER="github",
                NCLAV_GIT_API_URL=host.url,
                NCLAV_PUBLIC_URL="https://nclav.example.com",
            )
        )
        deliver(github, url, "refs/heads/main", ZERO, sha)
        run = applied_run(github, sha)
        wait_until(
            lambda: any(
                s["context"] == "nclav/apply" and s["state"] == "success" for s in host.statuses
            ),
            30,
            "the apply status",
        )
        assert host.errors == []
        seen = [(s["api"], s["repo"], s["sha"], s["context"], s["state"]) for s in host.statuses]
        assert seen == [
            ("github", "acme/infra", sha, "nclav/plan", "success"),
            ("github", "acme/infra", sha, "nclav/apply", "pending"),
            ("github", "acme/infra", sha, "nclav/apply", "success"),
        ]
        assert host.statuses[0]["description"] == "1 to add, 0 to change, 0 to destroy"
        assert host.statuses[-1]["target_url"] == f"https://nclav.example.com/runs/{run['id']}"
        github.stop()

        # GitLab: its own webhook scheme and its statuses API.
        host.statuses.clear()
        second = repo.commit("v2", enclave("data"))
        repo.push()
        gitlab = server_factory(
            env=source_env(
                url,
                NCLAV_GIT_TOKEN=TOKEN,
                NCLAV_GIT_PROVIDER="gitlab",
                NCLAV_GIT_API_URL=f"{host.url}/api/v4",
            )
        )
        body = gitlab_push(url, "refs/heads/main", sha, second)
        answer = gitlab.request(
            "POST", "/webhooks/gitlab", body, auth=False, headers=gitlab_headers(SECRET, "gl-1")
        )
        assert answer.status == 202, answer
        wrong = gitlab_headers("wrong", "gl-2")
        assert (
            gitlab.request("POST", "/webhooks/gitlab", body, auth=False, headers=wrong).status
            == 401
        )
        run = applied_run(gitlab, second)
        assert run["origin"]["delivery"] == "gl-1"
        wait_until(
            lambda: any(
                s["context"] == "nclav/apply" and s["state"] == "success" for s in host.statuses
            ),
            30,
            "the GitLab apply status",
        )
        assert host.errors == []
        assert {s["project"] for s in host.statuses} == {"acme%2Finfra"}
        assert [s["state"] for s in host.statuses] == ["success", "pending", "success"]
        assert "target_url" not in host.statuses[-1]  # no public URL configured
    finally:
        host.close()


def test_a_preview_branch_gets_a_plan_status_and_no_run(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    host = StatusHost(TOKEN)
    try:
        base = repo.commit("v1", enclave("app"))
        repo.push()
        feature = repo.commit("try a second enclave", enclave("data"))
        repo.push("feature/data")
        env = source_env(
            url,
            NCLAV_GIT_TOKEN=TOKEN,
            NCLAV_GIT_PROVIDER="github",
            NCLAV_GIT_API_URL=host.url,
            NCLAV_GIT_PREVIEW_BRANCHES="true",
        )
        server = server_factory(env=env)
        response, _ = deliver(server, url, "refs/heads/feature/data", base, feature)
        assert (response.status, response.json["status"]) == (202, "preview queued")
        wait_until(lambda: host.statuses, 30, "the preview's plan status")
        assert host.errors == []
        assert host.statuses == [
            {
                "api": "github",
                "repo": "acme/infra",
                "sha": feature,
                "context": "nclav/plan",
                "state": "success",
                "description": "2 to add, 0 to change, 0 to destroy (preview, not applied)",
            }
        ]
        time.sleep(0.5)
        assert server.ok("GET", "/runs") == [] and server.enclaves() == {}
        assert server.ok("GET", "/source")["pushes"][0]["outcome"].startswith("preview: 2 to add")
        server.stop()

        off = server_factory(env={**env, "NCLAV_GIT_PREVIEW_BRANCHES": "false"})
        response, _ = deliver(off, url, "refs/heads/feature/data", base, feature)
        assert (
            response.json["status"]
            == "ignored: ref refs/heads/feature/data (the source follows refs/heads/main)"
        )
    finally:
        host.close()


def nclav(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NCLAV_")}
    env.update(NCLAV_URL=server.url, NCLAV_TOKEN=server.token)
    return subprocess.run(
        [sys.executable, "-m", "nclav", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_cli_sets_shows_and_syncs_the_source(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    sha = repo.commit("Add app", enclave("app"))
    repo.push()
    server = server_factory(env={"NCLAV_GIT_POLL_S": "0"})
    shown = nclav(server, "source")
    assert shown.returncode == 0 and "No git source configured" in shown.stdout
    assert f"cat {server.home / 'webhook-secret'}" in shown.stdout
    assert stat.S_IMODE((server.home / "webhook-secret").stat().st_mode) == 0o600

    bad = nclav(server, "source", "set", "https://user:pw@example.com/acme/infra")
    assert bad.returncode != 0 and "must not contain credentials" in bad.stderr + bad.stdout

    done = nclav(server, "source", "set", url, "--branch", "main", "--path", "enclaves")
    assert done.returncode == 0, done.stderr
    assert f"Repository:  {url}" in done.stdout
    synced = nclav(server, "source", "sync", "--wait", "60")
    assert synced.returncode == 0, synced.stderr
    assert f"Commit {sha}: run" in synced.stdout and "(succeeded)" in synced.stdout
    runs = nclav(server, "runs")
    assert sha[:7] in runs.stdout, runs.stdout
    shown = nclav(server, "source", "--output", "json")
    assert json.loads(shown.stdout)["applied"]["commit"] == sha

    old = (server.home / "webhook-secret").read_text().strip()
    rotated = nclav(server, "source", "rotate-secret")
    new = (server.home / "webhook-secret").read_text().strip()
    assert rotated.returncode == 0 and new != old and new in rotated.stdout
    body = github_push(url, "refs/heads/main", sha, sha)
    stale = github_headers(old, body, "d-old")
    assert server.request("POST", "/webhooks/github", body, auth=False, headers=stale).status == 401
    fresh = github_headers(new, body, "d-new")
    assert server.request("POST", "/webhooks/github", body, auth=False, headers=fresh).status == 202

    # An unreachable remote: the sync answers 502 naming it, never 500.
    gone = "http://127.0.0.1:9/acme/gone.git"
    assert server.request("PUT", "/source", {"url": gone}).status == 200
    failed = server.request("POST", "/source/sync")
    assert failed.status == 502, failed
    assert failed.json["error"]["code"] == "git_remote" and gone in failed.json["error"]["message"]
    assert "unhandled error" not in server.stderr()


def test_the_source_and_webhook_routes_answer_what_the_openapi_document_says(
    server_factory: Callable[..., Server], git_server: GitServer, tmp_path: Path
) -> None:
    """Every source and webhook operation's success answer, checked against the live server's
    own OpenAPI document (the schemathesis suite's server has no git server to reach)."""
    from openapi_check import assert_conforms

    url = git_server.url("acme/infra")
    repo = Repo(tmp_path / "work", url)
    head = repo.commit("Add the network hub", HUB)
    repo.push()
    server = server_factory(env={"NCLAV_GIT_POLL_S": "0"})  # configured below, by PUT /source
    doc = server.ok("GET", "/openapi.json")

    def check(method: str, pattern: str, response: Any) -> Any:
        assert_conforms(doc, method, pattern, response.status, response.json, "application/json")
        return response.json

    check("GET", "/source", server.request("GET", "/source"))
    body = {"url": url, "branch": "main", "path": "enclaves"}
    assert check("PUT", "/source", server.request("PUT", "/source", body))["configured"] is True
    synced = check("POST", "/source/sync", server.request("POST", "/source/sync?wait=120"))
    assert synced["commit"] == head and synced["status"] == "succeeded", synced
    secret = check(
        "POST", "/source/webhook-secret", server.request("POST", "/source/webhook-secret")
    )["webhook_secret"]
    assert secret == (server.home / "webhook-secret").read_text().strip()

    push = github_push(url, "refs/heads/main", ZERO, head)
    for scheme in ("github", "git"):
        delivery = f"{scheme}-1"
        headers = github_headers(secret, push, delivery)
        first = server.request("POST", f"/webhooks/{scheme}", push, auth=False, headers=headers)
        assert check("POST", f"/webhooks/{scheme}", first)["status"] == "queued", first
        again = server.request("POST", f"/webhooks/{scheme}", push, auth=False, headers=headers)
        assert check("POST", f"/webhooks/{scheme}", again)["status"] == "duplicate"
    gitlab = gitlab_push(url, "refs/heads/main", ZERO, head)
    answer = server.request(
        "POST", "/webhooks/gitlab", gitlab, auth=False, headers=gitlab_headers(secret, "gl-1")
    )
    assert check("POST", "/webhooks/gitlab", answer)["status"] == "queued", answer
