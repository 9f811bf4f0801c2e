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


__all__ = ["GitServer", "Repo", "git"]
