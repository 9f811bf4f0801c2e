"""The git source's parts on their own (issue 15): settings, webhook verification and payload
reading over the real GitHub/GitLab example payloads, the tree read from a real fetched commit
(links, submodules), the control-message dispatch and the webhook's group-committed record.
The scenarios end to end are in tests/e2e/test_git_source.py."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

import pytest

from gitserver import FIXTURES, GitServer, Repo, git, github_push, gitlab_push
from nclav.errors import SpecError
from nclav.gitsource.fetch import GitError, GitFetcher
from nclav.gitsource.settings import GitSettings, check_branch, check_path, check_url
from nclav.gitsource.webhooks import (
    BadSignature,
    RateLimiter,
    parse,
    same_repository,
    verify,
)
from nclav.gitsource.worker import dispatch

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = "webhook-secret"
SHA_A, SHA_B = "a" * 40, "b" * 40


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- settings -------------------------------------------------------------------------------


def test_a_url_with_credentials_is_refused_naming_the_setting() -> None:
    with pytest.raises(SpecError) as caught:
        GitSettings.from_env({"NCLAV_GIT_URL": "https://x:ghp_secret@github.com/acme/infra"})
    text = str(caught.value)
    assert "NCLAV_GIT_URL" in text and "must not contain credentials" in text
    assert "ghp_secret" not in text


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_url, "ssh://git@github.com/acme/infra"),
        (check_url, "https://github.com/acme/infra?x=1"),
        (check_branch, "../main"),
        (check_branch, "has space"),
        (check_path, "../outside"),
        (check_path, "/abs"),
    ],
)
def test_bad_settings_are_refused(check: Any, value: str) -> None:
    with pytest.raises(SpecError):
        check(value)


def test_settings_from_env_and_the_status_api() -> None:
    s = GitSettings.from_env(
        {
            "NCLAV_GIT_URL": "https://github.com/acme/infra.git/",
            "NCLAV_GIT_BRANCH": "refs/heads/prod",
            "NCLAV_GIT_PATH": "./deploy/enclaves/",
            "NCLAV_GIT_POLL_S": "0",
            "NCLAV_GIT_PREVIEW_BRANCHES": "yes",
        }
    )
    assert (s.url, s.branch, s.path, s.poll_s, s.preview_branches) == (
        "https://github.com/acme/infra.git",
        "prod",
        "deploy/enclaves",
        0.0,
        True,
    )
    assert (s.guessed_provider(), s.status_api()) == ("github", "https://api.github.com")
    lab = GitSettings(url="https://gitlab.example.com/group/infra")
    assert lab.status_api() == "https://gitlab.example.com/api/v4"
    assert GitSettings(url="https://git.example.com/x/y").status_api() is None
    with pytest.raises(SpecError, match="NCLAV_GIT_POLL_S"):
        GitSettings.from_env({"NCLAV_GIT_POLL_S": "soon"})


# -- webhooks over the real example payloads ---------------------------------------------------


def test_every_octokit_push_example_verifies_and_parses() -> None:
    examples = json.loads((FIXTURES / "github-push.json").read_text())
    assert len(examples) == 7
    for example in examples:
        body = json.dumps(example).encode()
        headers = {
            "x-hub-signature-256": sign(body),
            "x-github-event": "push",
            "x-github-delivery": "d-1",
        }
        verify("github", SECRET, headers, body)
        push = parse("github", headers, body).push
        assert push is not None
        assert (push.ref, push.after, push.delivery) == (example["ref"], example["after"], "d-1")
        assert push.deleted is (example["deleted"] or example["after"] == "0" * 40)
        assert "https://github.com/Codertocat/Hello-World.git" in push.repositories


def test_a_branch_push_reads_author_message_and_force() -> None:
    body = github_push("http://h/acme/infra.git", "refs/heads/main", SHA_A, SHA_B, forced=True)
    push = parse("github", {"x-github-event": "push"}, body).push
    assert push is not None and push.forced and not push.deleted
    assert (push.after, push.before, push.ref) == (SHA_B, SHA_A, "refs/heads/main")
    assert push.author == "Codertocat" and push.message


@pytest.mark.parametrize(
    "header",
    [
        None,
        "sha256=" + "0" * 64,
        "sha1=" + "0" * 40,
        "garbage",
    ],
)
def test_a_bad_or_missing_signature_is_refused(header: str | None) -> None:
    body = github_push("http://h/r.git", "refs/heads/main", SHA_A, SHA_B)
    headers = {} if header is None else {"x-hub-signature-256": header}
    with pytest.raises(BadSignature):
        verify("github", SECRET, headers, body)
    with pytest.raises(BadSignature):  # signed with another secret, or over another body
        verify("github", SECRET, {"x-hub-signature-256": sign(body, "other")}, body)
    with pytest.raises(BadSignature):
        verify("github", SECRET, {"x-hub-signature-256": sign(body)}, body + b" ")


def test_the_gitlab_example_verifies_by_token_and_parses() -> None:
    body = (FIXTURES / "gitlab-push.json").read_bytes()
    headers = {"x-gitlab-token": SECRET, "x-gitlab-event": "Push Hook", "idempotency-key": "k1"}
    verify("gitlab", SECRET, headers, body)
    with pytest.raises(BadSignature):
        verify("gitlab", SECRET, {**headers, "x-gitlab-token": "wrong"}, body)
    push = parse("gitlab", headers, body).push
    assert push is not None
    assert push.after == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert (push.author, push.message, push.delivery) == ("GitLab dev user", "fixed readme", "k1")
    assert "http://example.com/mike/diaspora.git" in push.repositories
    replaced = parse(
        "gitlab", headers, gitlab_push("http://h/a/b.git", "refs/heads/x", SHA_A, SHA_B)
    )
    assert replaced.push is not None and replaced.push.after == SHA_B


def test_a_ping_and_other_events_are_not_pushes() -> None:
    assert parse("github", {"x-github-event": "ping"}, b"{}").event == "ping"
    assert parse("git", {"x-gitea-event": "issues"}, b"{}").push is None


def test_repository_urls_compare_without_scheme_suffix_or_case() -> None:
    assert same_repository("https://GitHub.com/acme/infra.git", "http://github.com/acme/infra/")
    assert not same_repository("https://github.com/acme/infra", "https://github.com/acme/other")


def test_the_rate_limiter_allows_a_burst_then_refuses() -> None:
    limiter = RateLimiter(rate=0.001, burst=3)
    assert [limiter.allow() for _ in range(5)] == [True, True, True, False, False]


# -- the tree of a real fetched commit ------------------------------------------------------


@pytest.fixture(name="served")
def served_fixture(tmp_path: Path) -> Iterator[tuple[GitServer, Repo, GitFetcher]]:
    with GitServer(tmp_path / "git") as server:
        server.create("acme/infra")
        repo = Repo(tmp_path / "work", server.url("acme/infra"))
        fetcher = GitFetcher(tmp_path / "cache")
        try:
            yield server, repo, fetcher
        finally:
            fetcher.close()


APP = {"enclaves/app/config.yml": "id: app\nname: App\ncloud: local\nregion: local-1\n"}


def test_a_link_inside_the_tree_is_followed_and_one_leading_out_is_refused(
    served: tuple[GitServer, Repo, GitFetcher],
) -> None:
    _server, repo, fetcher = served
    repo.write({**APP, "shared/main.tf": "# shared\n", "README.md": "not part of the tree\n"})
    os.symlink("app/config.yml", repo.path / "enclaves" / "alias.yml")  # not a config name
    sha = repo.commit("a link inside")
    repo.push()
    packed = fetcher.fetch_and_pack(repo.url, None, sha, "enclaves")
    assert set(packed.files) == {"app/config.yml"}  # only what the loader reads
    assert packed.commit.author == "Ada Lovelace" and packed.commit.message == "a link inside"

    os.symlink("../../shared", repo.path / "enclaves" / "app" / "escape")
    out = repo.commit("a link out")
    repo.push()
    with pytest.raises(SpecError, match="symbolic link points outside the enclaves directory"):
        fetcher.fetch_and_pack(repo.url, None, out, "enclaves")


def test_a_submodule_in_the_tree_is_refused(served: tuple[GitServer, Repo, GitFetcher]) -> None:
    _server, repo, fetcher = served
    repo.write(APP)
    git("add", "-A", cwd=repo.path)
    git(
        "update-index",
        "--add",
        "--cacheinfo",
        f"160000,{'c' * 40},enclaves/vendored",
        cwd=repo.path,
    )
    git("commit", "-q", "-m", "a submodule", cwd=repo.path)
    sha = repo.push()
    with pytest.raises(SpecError, match="submodules are not supported"):
        fetcher.fetch_and_pack(repo.url, None, sha, "enclaves")


def test_a_missing_commit_is_an_error_and_a_missing_path_an_empty_tree(
    served: tuple[GitServer, Repo, GitFetcher],
) -> None:
    _server, repo, fetcher = served
    sha = repo.commit("app", APP)
    repo.push()
    with pytest.raises(GitError, match="is not on"):
        fetcher.fetch(repo.url, None, "d" * 40)
    assert fetcher.ls_remote(repo.url, None, "main") == sha
    assert fetcher.ls_remote(repo.url, None, "absent") is None
    # A commit without the source path is an empty tree (the directory was deleted): its
    # plan deletes everything applied, which the server-side delete guard holds.
    assert fetcher.fetch_and_pack(repo.url, None, sha, "nowhere").files == {}
    repo.write({"enclaves": None})
    repo.write({"enclaves": "now a file\n"})
    not_a_dir = repo.commit("enclaves is a file")
    repo.push()
    with pytest.raises(SpecError, match="enclaves directory is not a directory"):
        fetcher.fetch_and_pack(repo.url, None, not_a_dir, "enclaves")


def test_a_second_fetch_receives_only_what_changed(
    served: tuple[GitServer, Repo, GitFetcher],
) -> None:
    _server, repo, fetcher = served
    big = {
        f"enclaves/e{i}/config.yml": (
            f"id: e{i}\nname: E{i}\ncloud: local\nregion: r\n# {os.urandom(400).hex()}\n"
        )
        for i in range(40)
    }
    first = repo.commit("many", big)
    repo.push()
    one = fetcher.fetch_and_pack(repo.url, None, first, "enclaves").fetched_bytes
    second = repo.commit("one more", APP)
    repo.push()
    two = fetcher.fetch_and_pack(repo.url, None, second, "enclaves").fetched_bytes
    assert 0 < two <= one / 10, (one, two)


def test_a_push_is_planned_with_the_collector_paused_and_its_phases_logged(
    served: tuple[GitServer, Repo, GitFetcher],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """From the fetch to the run's stored plan no automatic collection walks the heap (they
    were a fifth of push-to-plan on a large tree); afterwards the collector is back on, and
    the log says where the time went (scripts/bench_git.py reads that line)."""
    from nclav.local.runtime import LocalOptions, LocalRuntime

    _server, repo, _fetcher = served
    commit = repo.commit("app", APP)
    repo.push()
    options = LocalOptions(
        home=tmp_path / "home",
        port=0,
        git=GitSettings(url=repo.url, poll_s=0),
        git_webhook_secret=SECRET,
    )
    runtime = LocalRuntime(options, "t" * 64)
    try:
        collector_on: list[bool] = []
        start_run = runtime.engine.start_run

        def recording(*args: Any, **kwargs: Any) -> Any:
            collector_on.append(gc.isenabled())
            return start_run(*args, **kwargs)

        monkeypatch.setattr(runtime.engine, "start_run", recording)
        runtime.git._queue_head(commit, "test", send=False)
        with caplog.at_level(logging.INFO, logger="nclav.gitsource.source"):
            run = runtime.git.sync(commit)
        assert run is not None and run.origin is not None and run.origin.commit == commit
        assert collector_on == [False]
        assert gc.isenabled()
        assert re.search(
            rf"commit {commit} started run {run.id} \(fetched \d+ bytes in [\d.]+ s, loaded "
            r"the tree in [\d.]+ s, packed and stored the bundle in [\d.]+ s, created and "
            r"began the run in [\d.]+ s\)",
            caplog.text,
        ), caplog.text
    finally:
        runtime.stop()


# -- the worker's dispatch -----------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.handled: list[dict[str, str]] = []

    def handle(self, message: dict[str, str]) -> None:
        self.handled.append(message)


def test_dispatch_takes_control_messages_and_leaves_steps_to_the_engine() -> None:
    git_source: Any = _Recorder()
    assert dispatch({"run_id": "r", "step_id": "s"}, git_source) is False
    assert dispatch({"kind": "sync_source", "commit": SHA_A}, git_source) is True
    assert dispatch({"kind": "unknown"}, git_source) is True  # dropped, never to the engine
    assert dispatch({"kind": "sync_source", "commit": SHA_A}, None) is True
    assert git_source.handled == [{"kind": "sync_source", "commit": SHA_A}]


# -- the webhook's record: concurrent deliveries, every one kept --------------------------------


def test_concurrent_deliveries_are_all_recorded_and_deduplicated(tmp_path: Path) -> None:
    from nclav.gitsource.source import GitSource
    from nclav.local.dir_blobs import DirectoryBlobStore
    from nclav.local.file_secrets import FileSecretStore

    class Queue:
        def __init__(self) -> None:
            self.sent: list[dict[str, str]] = []
            self.lock = threading.Lock()

        def send(self, message: dict[str, str], delay_s: float = 0) -> None:
            with self.lock:
                self.sent.append(dict(message))

        def close(self) -> None:
            pass

    url = "http://127.0.0.1:9/acme/infra.git"
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    queue = Queue()
    source = GitSource(
        GitSettings(url=url, poll_s=0),
        service=None,  # type: ignore[arg-type]  # the webhook path never touches it
        blobs=blobs,
        queue=queue,
        secrets=FileSecretStore(tmp_path / "secrets"),
        fetcher=GitFetcher(tmp_path / "cache"),
        webhook_secret=SECRET,
    )
    answers: list[int] = []

    def deliver(i: int) -> None:
        body = github_push(url, "refs/heads/main", SHA_A, f"{i + 1:040x}")
        headers = {"x-hub-signature-256": sign(body), "x-github-event": "push"}
        headers["x-github-delivery"] = f"d-{i % 20}"  # 40 deliveries, 20 ids: 20 duplicates
        answers.append(source.receive("github", headers, body).status)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    source.close()
    assert sorted(answers) == [200] * 20 + [202] * 20
    assert len(queue.sent) == 20
    stored = json.loads(blobs.get("git/source.json"))
    assert sorted(stored["deliveries"]) == sorted(f"d-{i}" for i in range(20))
    assert stored["pending"]["commit"] in {m["commit"] for m in queue.sent}


# -- the local runtime's webhook secret ---------------------------------------------------


def test_the_webhook_secret_is_generated_once_0600_and_rotated_on_request(tmp_path: Path) -> None:
    import stat

    from click.testing import CliRunner

    from nclav.cli import main
    from nclav.local.runtime import LocalOptions, LocalRuntime

    def secret_of(**options: Any) -> str:
        runtime = LocalRuntime(LocalOptions(home=tmp_path / "home", **options), "t" * 64)
        try:
            return runtime.git.webhook_secret
        finally:
            runtime.git.close()
            runtime.store.close()  # type: ignore[attr-defined]

    first = secret_of()
    path = tmp_path / "home" / "webhook-secret"
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_of() == first  # kept across starts
    rotated = secret_of(rotate_webhook_secret=True)
    assert rotated != first and path.read_text().strip() == rotated
    assert secret_of(git_webhook_secret="given") == "given"  # the override is never written
    assert path.read_text().strip() == rotated
    assert "--rotate-webhook-secret" in CliRunner().invoke(main, ["serve", "--help"]).stdout


def test_processes_sharing_the_document_see_each_other_s_pushes_and_settings(
    tmp_path: Path,
) -> None:
    """A cloud runtime's API function records the push; its worker function, another process
    with its own ``GitSource``, must find it pending (and follow a PUT /source)."""
    from nclav.gitsource.source import GitSource
    from nclav.local.dir_blobs import DirectoryBlobStore
    from nclav.local.file_secrets import FileSecretStore

    class Queue:
        def send(self, message: dict[str, str], delay_s: float = 0) -> None:
            pass

        def close(self) -> None:
            pass

    url = "http://127.0.0.1:9/acme/infra.git"
    blobs = DirectoryBlobStore(tmp_path / "blobs")

    def process(**settings: Any) -> GitSource:
        return GitSource(
            GitSettings(poll_s=0, **settings),
            service=None,  # type: ignore[arg-type]  # nothing here runs a reconcile
            blobs=blobs,
            queue=Queue(),
            secrets=FileSecretStore(tmp_path / "secrets"),
            fetcher=GitFetcher(tmp_path / "cache"),
            webhook_secret=SECRET,
            shared=True,
        )

    api, worker = process(url=url), process()
    body = github_push(url, "refs/heads/main", SHA_A, SHA_B)
    headers = {"x-hub-signature-256": sign(body), "x-github-event": "push"}
    assert api.receive("github", headers, body).status == 202
    assert worker.describe()["pending"]["commit"] == SHA_B
    worker.configure("http://127.0.0.1:9/acme/other.git", "prod", ".")
    doc = api.describe()
    assert (doc["url"], doc["branch"], doc["path"]) == (
        "http://127.0.0.1:9/acme/other.git",
        "prod",
        ".",
    )
    assert doc["pending"] is None  # another repository: nothing of the old one is pending
    api.close()
    worker.close()


def test_deliveries_beyond_the_source_s_rate_get_429_before_any_check(tmp_path: Path) -> None:
    from nclav.gitsource.source import GitSource
    from nclav.local.dir_blobs import DirectoryBlobStore
    from nclav.local.file_secrets import FileSecretStore

    class Queue:
        def send(self, message: dict[str, str], delay_s: float = 0) -> None:
            pass

        def close(self) -> None:
            pass

    source = GitSource(
        GitSettings(url="http://h/a/b.git", poll_s=0, webhook_rate=0.001, webhook_burst=2),
        service=None,  # type: ignore[arg-type]
        blobs=DirectoryBlobStore(tmp_path / "blobs"),
        queue=Queue(),
        secrets=FileSecretStore(tmp_path / "secrets"),
        fetcher=GitFetcher(tmp_path / "cache"),
        webhook_secret=SECRET,
    )
    statuses = [source.receive("github", {}, b"{}", "r").status for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert source.rejected == 2  # the refused one was not even verified
    source.close()


# -- an operator's sync_source message (issue 14) ---------------------------------------------


def _source(tmp_path: Path, url: str | None) -> Any:
    from nclav.gitsource.source import GitSource
    from nclav.local.dir_blobs import DirectoryBlobStore
    from nclav.local.file_secrets import FileSecretStore

    class Synced(GitSource):
        """Records what the branch-head sync was asked; the rest is the real source."""

        calls: list[str]

        def sync_now(self) -> tuple[str | None, Any]:
            self.calls.append("sync_now")
            return SHA_B, None

        def sync(self, commit: str, *, force: bool = False) -> Any:
            self.calls.append(f"sync {commit}")

    source = Synced(
        GitSettings(url=url, poll_s=0),
        service=None,  # type: ignore[arg-type]  # the syncs above are recorded, not run
        blobs=DirectoryBlobStore(tmp_path / "blobs"),
        queue=None,  # type: ignore[arg-type]
        secrets=FileSecretStore(tmp_path / "secrets"),
        fetcher=GitFetcher(tmp_path / "cache"),
        webhook_secret=SECRET,
    )
    source.calls = []
    return source


def test_a_sync_source_message_without_a_commit_syncs_the_branch_head(tmp_path: Path) -> None:
    source = _source(tmp_path, "http://127.0.0.1:9/acme/infra.git")
    source.handle({"kind": "sync_source"})  # an operator's: "fetch the branch head now"
    source.handle({"kind": "sync_source", "commit": SHA_A})  # the webhook's own
    assert source.calls == ["sync_now", f"sync {SHA_A}"]
    source.close()


def test_a_sync_source_message_without_a_configured_source_is_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _source(tmp_path, None)
    source.handle({"kind": "sync_source"})
    assert source.calls == []
    assert "no git source is configured" in caplog.text
    source.close()


def test_a_shared_source_takes_a_secret_rotated_elsewhere_and_bounds_its_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cloud runtime's sandboxes each hold the webhook secret: a rotation made in another
    sandbox is read again on the first delivery that does not verify (at most once a second,
    so forged deliveries do not each cost a secret-store read) and after the TTL."""
    from nclav.gitsource import source as source_module
    from nclav.gitsource.source import WEBHOOK_SECRET, GitSource
    from nclav.local.dir_blobs import DirectoryBlobStore
    from nclav.local.file_secrets import FileSecretStore

    store = FileSecretStore(tmp_path / "secrets")
    store.put(WEBHOOK_SECRET, "old")
    reads: list[str | None] = []

    def load() -> str | None:
        reads.append(found := store.get(WEBHOOK_SECRET))
        return found

    source = GitSource(
        GitSettings(url="http://h/a/b.git", poll_s=0),
        service=None,  # type: ignore[arg-type]  # a ping never reaches it
        blobs=DirectoryBlobStore(tmp_path / "blobs"),
        queue=None,  # type: ignore[arg-type]
        secrets=store,
        fetcher=GitFetcher(tmp_path / "cache"),
        webhook_secret="old",
        shared=True,
        load_secret=load,
    )
    ping = b'{"zen": "Design for failure.", "hook_id": 1}'

    def status(secret: str) -> int:
        headers = {"x-hub-signature-256": sign(ping, secret), "x-github-event": "ping"}
        return source.receive("github", headers, ping).status

    assert status("old") == 200 and reads == []  # the secret read when it was built
    store.put(WEBHOOK_SECRET, "new")  # another sandbox rotated it
    assert status("new") == 200 and reads == ["new"]
    assert [status("forged") for _ in range(5)] == [401] * 5
    assert status("old") == 401
    assert reads == ["new"]  # within the second: no read for each refused delivery
    monkeypatch.setattr(source_module, "SECRET_TTL_S", 0.0)  # the TTL has run out
    store.put(WEBHOOK_SECRET, "newer")
    assert status("newer") == 200 and reads == ["new", "newer"]
    source.close()
