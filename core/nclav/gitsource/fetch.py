"""Fetching one commit with dulwich and packing its enclaves tree into the usual bundle.

dulwich speaks git's smart HTTP in pure Python, so every runtime (a Lambda function included)
can fetch without a git binary. Exactly the wanted commit is fetched, at depth 1, into a bare
repository kept per source: its objects stay between pushes, so the next fetch says what it
already has and receives only what changed.

dulwich reports success when the server does not send a wanted sha, so the commit's presence
is checked afterwards. The tree is read in memory through ``GitTreeSource`` (the loader's
``TreeSource``); a symbolic link is followed only while it stays inside the source path, as the
directory loader does on disk.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dulwich.errors import HangupException
from dulwich.objects import S_IFGITLINK, S_ISGITLINK, ObjectID, Tree
from dulwich.refs import Ref

from nclav.bundle import MAX_BYTES, MAX_FILE_BYTES, MAX_FILES, bundle_digest
from nclav.config import load_tree
from nclav.errors import Issue, NclavError, SpecError

if TYPE_CHECKING:
    from dulwich.repo import Repo

    from nclav.config import Desired

logger = logging.getLogger(__name__)

SHA = re.compile(r"[0-9a-f]{40}")
_USERNAME = "x-access-token"  # GitHub's name for token auth; GitLab and others accept any
_MAX_LINK_HOPS = 40


class GitError(NclavError):
    """The remote could not be reached, refused us, or did not send what was asked for."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    message: str  # the first line


@dataclass(frozen=True)
class Packed:
    digest: str
    desired: Desired
    files: dict[str, bytes]  # exactly the packed files
    commit: CommitInfo
    fetched_bytes: int  # pack bytes this fetch added to the local object store
    fetch_s: float = 0.0  # seconds the fetch took (0 when the commit was here already)
    load_s: float = 0.0  # seconds reading and checking the tree took


def _client(url: str, token: str | None) -> tuple[object, str]:
    from dulwich.client import get_transport_and_path

    if token:
        return get_transport_and_path(url, username=_USERNAME, password=token)
    return get_transport_and_path(url)


def _git_error(url: str, action: str, exc: Exception) -> GitError:
    from dulwich.client import HTTPUnauthorized

    if isinstance(exc, HTTPUnauthorized):
        return GitError(
            f"{action} {url}: the repository refused the credentials "
            "(set NCLAV_GIT_TOKEN to a token that may read it)"
        )
    # The URL holds no credentials (settings refuse them), so naming it is safe.
    return GitError(f"{action} {url}: {type(exc).__name__}: {exc}")


class GitFetcher:
    """Bare repositories under ``cache_dir``, one per source URL; a temporary one without."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._repos: dict[str, Repo] = {}

    def _repo_dir(self, url: str) -> Path:
        if self.cache_dir is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="nclav-git-")
            base = Path(self._tmp.name)
        else:
            base = self.cache_dir
        return base / hashlib.sha256(url.encode()).hexdigest()[:24]

    def _lock(self, url: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(url, threading.RLock())

    def _repo(self, url: str) -> Repo:
        from dulwich.repo import Repo

        if url in self._repos:
            return self._repos[url]
        path = self._repo_dir(url)
        if (path / "objects").is_dir():
            repo = Repo(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            repo = Repo.init_bare(str(path), mkdir=not path.exists())
        self._repos[url] = repo
        return repo

    def fetch_and_pack(self, url: str, token: str | None, commit: str, path: str) -> Packed:
        """Fetch ``commit`` and pack its tree at ``path`` (one source at a time)."""
        with self._lock(url):
            started = time.perf_counter()
            repo, fetched = self.fetch(url, token, commit)
            fetched_at = time.perf_counter()
            digest, desired, files = load_commit(repo, commit, path, url)
            return Packed(
                digest,
                desired,
                files,
                commit_info(repo, commit),
                fetched,
                fetch_s=fetched_at - started,
                load_s=time.perf_counter() - fetched_at,
            )

    def ls_remote(self, url: str, token: str | None, branch: str) -> str | None:
        """The branch head on the remote, or None when the branch does not exist."""
        ref = f"refs/heads/{branch}".encode()
        client, path = _client(url, token)
        try:
            result = client.get_refs(path.encode(), ref_prefix=[ref])  # type: ignore[attr-defined]
        except Exception as exc:
            raise _git_error(url, "listing the branches of", exc) from exc
        sha = result.refs.get(ref)
        return sha.decode("ascii") if sha else None

    def fetch(self, url: str, token: str | None, commit: str) -> tuple[Repo, int]:
        """Fetch ``commit`` at depth 1; return the repository and the pack bytes added."""
        if not SHA.fullmatch(commit):
            raise GitError(f"expected a 40-character commit sha, got {commit!r}")
        with self._lock(url):
            repo = self._repo(url)
            want = ObjectID(commit.encode("ascii"))
            if want in repo.object_store:
                return repo, 0  # a retry or a re-push: everything is here already
            before = _pack_bytes(repo)
            client, path = _client(url, token)
            try:
                client.fetch(  # type: ignore[attr-defined]
                    path, repo, determine_wants=lambda _refs, depth=None: [want], depth=1
                )
            except HangupException as exc:  # git's upload-pack hangs up on an unknown sha
                raise GitError(f"commit {commit} is not on {url} (the server refused it)") from exc
            except Exception as exc:
                raise _git_error(url, "fetching from", exc) from exc
            if want not in repo.object_store:
                raise GitError(f"commit {commit} is not on {url} (or it was not sent)")
            # A ref keeps the commit as a "have" for the next fetch, which then sends only
            # what changed since.
            repo.refs[Ref(b"refs/heads/fetched")] = want  # refs/heads/*: the walker reads those
            return repo, _pack_bytes(repo) - before

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()
        self._repos.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _pack_bytes(repo: Repo) -> int:
    pack_dir = Path(repo.controldir()) / "objects" / "pack"
    return sum(p.stat().st_size for p in pack_dir.glob("*.pack")) if pack_dir.is_dir() else 0


def commit_info(repo: Repo, commit: str) -> CommitInfo:
    obj = repo[commit.encode("ascii")]
    author = obj.author.decode("utf-8", "replace")  # type: ignore[attr-defined]
    name = author.split(" <", 1)[0]
    message = obj.message.decode("utf-8", "replace")  # type: ignore[attr-defined]
    first = message.strip().splitlines()[0] if message.strip() else ""
    return CommitInfo(commit, name, first[:200])


class GitTreeSource:
    """The loader's ``TreeSource`` over the tree at ``path`` in a fetched commit."""

    def __init__(self, repo: Repo, commit: str, path: str, display_root: str) -> None:

        self.repo = repo
        self.display_root = display_root
        self.base = [] if path in ("", ".") else path.split("/")
        root = repo[repo[commit.encode("ascii")].tree]  # type: ignore[attr-defined]
        assert isinstance(root, Tree)
        self._trees: dict[str, Tree] = {"": root}
        # Objects by sha: a tree repeats files (one main.tf in many partitions) and every
        # path is resolved from the root, so each object is read from the pack once.
        self._objects: dict[bytes, object] = {}
        self._found: dict[str, tuple[int, bytes, list[str]] | None] = {}
        self.contents: dict[str, bytes] = {}
        found = self._walk(self.base, 0, display_root)
        # A commit without the source path (the enclaves directory deleted) is an empty tree:
        # its plan deletes every enclave, which the server-side delete guard holds for approval.
        self.empty = found is None
        if found is not None and not stat.S_ISDIR(found[0]):
            raise SpecError(
                [Issue(display_root, None, "", "enclaves directory is not a directory")]
            )

    # -- resolving paths, following links that stay inside ------------------------------

    def _tree(self, real: list[str]) -> Tree | None:
        key = "/".join(real)
        if key in self._trees:
            return self._trees[key]
        parent = self._tree(real[:-1])
        if parent is None or real[-1].encode() not in parent:
            return None
        mode, sha = parent[real[-1].encode()]
        if not stat.S_ISDIR(mode):
            return None
        tree = self._object(sha)
        assert isinstance(tree, Tree)
        self._trees[key] = tree
        return tree

    def _object(self, sha: bytes) -> object:
        found = self._objects.get(sha)
        if found is None:
            found = self._objects[sha] = self.repo[sha]
        return found

    def _blob(self, sha: bytes) -> bytes:
        data: bytes = self._object(sha).as_raw_string()  # type: ignore[attr-defined]
        return data

    def _walk(self, parts: list[str], hops: int, where: str) -> tuple[int, bytes, list[str]] | None:
        """(mode, sha, real path parts) of repository path ``parts``, following links."""
        real: list[str] = []
        todo = list(parts)
        mode, sha = stat.S_IFDIR, b""
        while todo:
            name = todo.pop(0)
            tree = self._tree(real)
            if tree is None or name.encode() not in tree:
                return None
            mode, sha = tree[name.encode()]
            if stat.S_ISLNK(mode):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise self._bad(where, "too many levels of symbolic links")
                target = self._blob(sha).decode("utf-8", "replace")
                joined = posixpath.normpath(posixpath.join("/".join(real), target))
                if target.startswith("/") or not self._inside(joined):
                    raise self._bad(where, "symbolic link points outside the enclaves directory")
                todo = [p for p in joined.split("/") if p not in ("", ".")] + todo
                real = []
                mode = stat.S_IFDIR
                continue
            if S_ISGITLINK(mode):
                raise self._bad(where, "git submodules are not supported in the enclaves tree")
            real.append(name)
        return mode, sha, real

    def _inside(self, joined: str) -> bool:
        parts = [p for p in joined.split("/") if p not in ("", ".")]
        return not joined.startswith("..") and parts[: len(self.base)] == self.base

    def _bad(self, where: str, message: str) -> SpecError:
        return SpecError([Issue(where, None, "", message)])

    def _display(self, rel: str) -> str:
        root = self.display_root.rstrip("/")
        return f"{root}/{rel}" if rel else root

    def _parts(self, rel: str) -> list[str]:
        return self.base + ([p for p in rel.split("/") if p] if rel else [])

    def _lookup(self, rel: str) -> tuple[int, bytes, list[str]] | None:
        """``_walk`` of a path relative to the source root, remembered (the loader asks
        about a file more than once: is it there, then its content)."""
        if rel in self._found:
            return self._found[rel]
        found = self._found[rel] = self._walk(self._parts(rel), 0, self._display(rel))
        return found

    # -- TreeSource ---------------------------------------------------------------------

    def listdir(self, rel: str) -> tuple[list[str], list[str]]:
        if self.empty:
            return [], []
        found = self._lookup(rel)
        if found is None or not stat.S_ISDIR(found[0]):
            raise self._bad(self._display(rel), "cannot read: not a directory")
        here = found[2]
        tree = self._tree(here)
        assert tree is not None
        dirs: list[str] = []
        files: list[str] = []
        prefix = f"{rel}/" if rel else ""
        known = self._found
        # One pass over the entries, the file type compared as a number: the loader lists
        # every directory of the tree (11,000 on the 1,000 x 10 synthetic tree).
        for path, mode, sha in tree.iteritems():
            name = path.decode("utf-8", "surrogateescape")
            if name.startswith("."):
                continue
            child = prefix + name
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                target = self._lookup(child)
                if target is None:
                    continue  # a dangling link is not part of the tree
                kind, real = stat.S_IFMT(target[0]), target[2]
                if kind == stat.S_IFDIR and here[: len(real)] == real:
                    raise self._bad(
                        self._display(child),
                        "symbolic link points at a directory that contains it (a loop)",
                    )
            else:  # known now: reading it later needs no walk
                known.setdefault(child, (mode, sha, [*here, name]))
            if kind == stat.S_IFREG:
                files.append(name)
            elif kind == stat.S_IFDIR:
                dirs.append(name)
            elif kind == S_IFGITLINK:
                raise self._bad(
                    self._display(child), "git submodules are not supported in the enclaves tree"
                )
        dirs.sort()
        files.sort()
        return dirs, files

    def read(self, rel: str) -> bytes:
        found = self._lookup(rel)
        if found is None or not stat.S_ISREG(found[0]):
            raise self._bad(self._display(rel), "cannot read: not a file")
        data = self._blob(found[1])
        self.contents[rel] = data
        return data

    def is_file(self, rel: str) -> bool:
        found = self._lookup(rel)
        return found is not None and stat.S_ISREG(found[0])


def load_commit(
    repo: Repo, commit: str, path: str, url: str
) -> tuple[str, Desired, dict[str, bytes]]:
    """Load the enclaves tree at ``path`` in ``commit``: its bundle digest, the tree, and
    exactly the files the loader read (what ``bundle.pack`` packs; packing waits until the
    bundle is known to be new).

    The same checks as ``bundle.pack_directory``: a broken tree, a link leading out, or a tree
    too large raise SpecError naming the file as ``<url>@<commit>:<path>/...``.
    """
    display = f"{url}@{commit[:12]}:{path}"
    source = GitTreeSource(repo, commit, path, display)
    desired = load_tree(source)
    files = {rel: source.contents[rel] for rel in desired.files_read}
    total = sum(len(v) for v in files.values())
    problems = [
        Issue(display, None, "", message)
        for message, bad in (
            (f"enclaves tree has more than {MAX_FILES} files", len(files) > MAX_FILES),
            (f"enclaves tree is larger than {MAX_BYTES} bytes", total > MAX_BYTES),
        )
        if bad
    ]
    problems += [
        Issue(f"{display}/{rel}", None, "", f"larger than {MAX_FILE_BYTES} bytes")
        for rel, data in sorted(files.items())
        if len(data) > MAX_FILE_BYTES
    ]
    if problems:
        raise SpecError(problems)
    return bundle_digest(files), desired, files


__all__ = [
    "SHA",
    "CommitInfo",
    "GitError",
    "GitFetcher",
    "GitTreeSource",
    "Packed",
    "commit_info",
    "load_commit",
]
