"""A real git server for tests: ``git http-backend`` behind a small threaded WSGI wrapper.

``git http-backend`` is git's own smart-HTTP server (a CGI program in git's exec path). The
wrapper runs it once per request with the CGI variables it needs, passing ``GIT_PROTOCOL``
from the ``Git-Protocol`` header so protocol v2 works, and serves the bare repositories under
``root`` on 127.0.0.1. With ``token`` set, every request must carry HTTP Basic credentials
whose password is that token (a private repository); others get 401 with a challenge, as
GitHub and GitLab answer.

``Repo`` makes commits in a work tree with the real ``git`` command and pushes them.
"""

from __future__ import annotations

import base64
import hmac
import os
import shutil
import subprocess
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

GIT = shutil.which("git") or "git"
_EXEC_PATH = subprocess.run([GIT, "--exec-path"], capture_output=True, text=True).stdout.strip()
HTTP_BACKEND = os.path.join(_EXEC_PATH, "git-http-backend")
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    full = {**os.environ, **_GIT_ENV, "HOME": str(cwd or Path.cwd()), **(env or {})}
    done = subprocess.run(
        [GIT, *args], cwd=cwd, env=full, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class GitServer:
    """Serves ``root/<name>.git`` at ``http://127.0.0.1:<port>/<name>.git``."""

    def __init__(self, root: Path, token: str | None = None) -> None:
        self.root = root
        self.token = token
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.refused = 0
        root.mkdir(parents=True, exist_ok=True)
        self._server = make_server("127.0.0.1", 0, self._app, _Threaded, handler_class=_Quiet)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GitServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def create(self, name: str) -> Path:
        bare = self.root / f"{name}.git"
        git("init", "--bare", "-q", "-b", "main", str(bare), cwd=self.root)
        git("config", "http.receivepack", "true", cwd=bare)
        git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
        return bare

    def _authorized(self, environ: dict[str, Any]) -> bool:
        if self.token is None:
            return True
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(password.encode(), self.token.encode())

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
        if not self._authorized(environ):
            self.refused += 1
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")],
            )
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "tester",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.root),
        }
        if environ.get("HTTP_GIT_PROTOCOL"):
            env["GIT_PROTOCOL"] = environ["HTTP_GIT_PROTOCOL"]
        if environ.get("HTTP_CONTENT_ENCODING"):
            env["HTTP_CONTENT_ENCODING"] = environ["HTTP_CONTENT_ENCODING"]
        done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = "200 OK"
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name.strip(), value.strip()))
        start_response(status, headers)
        return [payload]


class Repo:
    """A work tree whose ``origin`` is a repository on a ``GitServer``."""

    def __init__(self, path: Path, url: str, token: str | None = None) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", "main", cwd=path)
        self.url = url
        if token:  # the credentials live in the work tree's URL only, never in nclav's
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://tester:{token}@{rest}"
        git("remote", "add", "origin", url, cwd=path)

    def write(self, files: dict[str, str | None]) -> None:
        """Write (or, for None, delete) files relative to the work tree."""
        for rel, text in files.items():
            target = self.path / rel
            if text is None:
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def commit(self, message: str, files: dict[str, str | None] | None = None) -> str:
        self.write(files or {})
        git("add", "-A", cwd=self.path)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.path)
        return self.head()

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.path)

    def push(self, branch: str = "main", *, force: bool = False, ref: str = "HEAD") -> str:
        args = ["push", "-q", "origin", f"{ref}:refs/heads/{branch}"]
        if force:
            args.insert(1, "--force")
        git(*args, cwd=self.path)
        return git("rev-parse", ref, cwd=self.path)


# -- webhook payloads and a commit-status host ------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webhooks"


def github_push(
    url: str, ref: str, before: str, after: str, *, forced: bool = False, example: int = 4
) -> bytes:
    """An ``@octokit/webhooks-examples`` push payload with the local repository's URL, ref
    and shas (example 4 is a branch push; 0 is a tag push)."""
    import copy
    import json

    doc = copy.deepcopy(json.loads((FIXTURES / "github-push.json").read_text())[example])
    deleted = after == "0" * 40
    doc.update(ref=ref, before=before, after=after, forced=forced, deleted=deleted)
    for key in ("clone_url", "html_url", "url", "git_url", "svn_url"):
        doc["repository"][key] = url
    if doc.get("head_commit") and not deleted:
        doc["head_commit"]["id"] = after
    for commit in doc.get("commits") or []:
        commit["id"] = after
    return json.dumps(doc).encode()


def gitlab_push(url: str, ref: str, before: str, after: str) -> bytes:
    """xanzy/go-gitlab's push hook payload with the local repository's URL, ref and shas."""
    import json

    doc = json.loads((FIXTURES / "gitlab-push.json").read_text())
    doc.update(ref=ref, before=before, after=after, checkout_sha=after)
    web = url.removesuffix(".git")
    doc["project"].update(git_http_url=url, http_url=url, web_url=web, homepage=web)
    doc["repository"].update(git_http_url=url, homepage=web)
    doc["commits"][-1]["id"] = after
    return json.dumps(doc).encode()


def github_headers(secret: str, body: bytes, delivery: str, event: str = "push") -> dict[str, str]:
    import hashlib

    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={signature}",
        "User-Agent": "GitHub-Hookshot/test",
    }


def gitlab_headers(secret: str, delivery: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Token": secret,
        "X-Gitlab-Event-UUID": delivery,
        "Idempotency-Key": delivery,
    }


class StatusHost:
    """A local HTTP server checking GitHub's and GitLab's documented commit-status requests.

    GitHub: ``POST /repos/{owner}/{repo}/statuses/{sha}``, ``Authorization: Bearer``,
    ``Accept: application/vnd.github+json``, JSON with ``state`` (error, failure, pending,
    success), ``context``, ``description`` (<= 140) and optional ``target_url``: 201.
    GitLab: ``POST /api/v4/projects/{id}/statuses/{sha}``, ``PRIVATE-TOKEN``, JSON with
    ``state`` (pending, running, success, failed, canceled), ``name``, ``description``,
    optional ``target_url``: 201. Anything else: 4xx, and the problem is kept in ``errors``.
    """

    def __init__(self, token: str) -> None:
        import json
        import re
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.token = token
        self.statuses: list[dict[str, Any]] = []
        self.errors: list[str] = []
        host = self
        github = re.compile(r"/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})")
        gitlab = re.compile(r"/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                problem, doc = host._check(self.path, self.headers, raw, github, gitlab, json)
                if problem:
                    host.errors.append(problem)
                    self.send_response(422)
                else:
                    host.statuses.append(doc)
                    self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _check(
        self, path: str, headers: Any, raw: bytes, github: Any, gitlab: Any, json: Any
    ) -> tuple[str | None, dict[str, Any]]:
        try:
            body = json.loads(raw)
        except ValueError:
            return f"{path}: body is not JSON", {}
        if (m := github.fullmatch(path)) is not None:
            if headers.get("Authorization") != f"Bearer {self.token}":
                return f"{path}: missing or wrong Authorization: Bearer", {}
            if headers.get("Accept") != "application/vnd.github+json":
                return f"{path}: Accept is not application/vnd.github+json", {}
            allowed = {"state", "target_url", "description", "context"}
            if set(body) - allowed or body.get("state") not in (
                "error",
                "failure",
                "pending",
                "success",
            ):
                return f"{path}: bad GitHub status body {body}", {}
            doc = {"api": "github", "repo": f"{m[1]}/{m[2]}", "sha": m[3], **body}
        elif (m := gitlab.fullmatch(path)) is not None:
            if headers.get("PRIVATE-TOKEN") != self.token:
                return f"{path}: missing or wrong PRIVATE-TOKEN", {}
            allowed = {"state", "ref", "name", "context", "target_url", "description", "coverage"}
            if set(body) - allowed or body.get("state") not in (
                "pending",
                "running",
                "success",
                "failed",
                "canceled",
            ):
                return f"{path}: bad GitLab status body {body}", {}
            doc = {
                "api": "gitlab",
                "project": m[1],
                "sha": m[2],
                "context": body.get("name"),
                **body,
            }
        else:
            return f"{path}: not a commit status endpoint", {}
        if len(str(body.get("description", ""))) > 140:
            return f"{path}: description longer than 140 characters", {}
        return None, doc

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


__all__ = [
    "GitServer",
    "Repo",
    "StatusHost",
    "git",
    "github_headers",
    "github_push",
    "gitlab_headers",
    "gitlab_push",
]
