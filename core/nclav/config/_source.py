"""Where an enclaves tree is read from: a directory on disk or an uploaded bundle.

Both answer the same three questions, with '/'-separated paths relative to the tree's root, so
the loader reads exactly the same tree whichever it is given. Listings are sorted, and hidden
entries (names starting with '.') are never part of a tree.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping


class TreeSource(Protocol):
    display_root: str

    def listdir(self, rel: str) -> tuple[list[str], list[str]]:
        """Sorted (subdirectory names, file names) of ``rel`` ('' is the root)."""
        ...

    def read(self, rel: str) -> bytes: ...

    def is_file(self, rel: str) -> bool: ...


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def display(source: TreeSource, rel: str) -> str:
    root = source.display_root
    if not root:
        return rel
    return f"{root.rstrip('/')}/{rel}" if rel else root


class DirectorySource:
    """A tree on disk. Symlinks are followed only while they stay inside the root."""

    def __init__(self, root: str | os.PathLike[str], display_root: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.display_root = escape_name(str(root) if display_root is None else display_root)
        if not os.path.isdir(self.root):
            what = "does not exist" if not os.path.exists(self.root) else "is not a directory"
            raise SpecError([Issue(self.display_root, None, "", f"enclaves directory {what}")])

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def _link_problem(self, rel: str, link: str) -> str | None:
        if not self._inside(link):
            return "symbolic link points outside the enclaves directory"
        target = os.path.realpath(link)
        here = os.path.realpath(self._abs(rel))
        if os.path.isdir(target) and (here == target or here.startswith(target + os.sep)):
            return "symbolic link points at a directory that contains it (a loop)"
        return None

    def listdir(self, rel: str) -> tuple[list[str], list[str]]:
        dirs: list[str] = []
        files: list[str] = []
        try:
            entries = list(os.scandir(self._abs(rel)))
        except OSError as exc:
            issue = Issue(display(self, rel), None, "", f"cannot read: {exc.strerror}")
            raise SpecError([issue]) from exc
        bad_names: list[Issue] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not _is_utf8(entry.name):
                # A bundle carries UTF-8 paths only: refuse here too, so `validate` and
                # `diff` agree about the same tree.
                where = display(self, join(rel, escape_name(entry.name)))
                bad_names.append(Issue(where, None, "", "file name is not valid UTF-8: rename it"))
                continue
            if entry.is_symlink():
                try:
                    problem = self._link_problem(rel, entry.path)
                except OSError as exc:  # e.g. /proc/1/cwd: the link cannot even be resolved
                    problem = f"cannot read symbolic link: {exc.strerror}"
                if problem:
                    raise SpecError(
                        [Issue(display(self, join(rel, entry.name)), None, "", problem)]
                    )
            try:  # d_type from the directory listing: no stat() per entry
                if entry.is_dir():
                    dirs.append(entry.name)
                elif entry.is_file():
                    files.append(entry.name)
            except OSError:
                continue  # a dangling link is not part of the tree
        if bad_names:  # refused like a bad link: every wrapper of a source passes it on
            raise SpecError(bad_names)
        dirs.sort()
        files.sort()
        return dirs, files

    def read(self, rel: str) -> bytes:
        try:  # os-level calls: a large tree reads tens of thousands of small files
            fd = os.open(self._abs(rel), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                chunks = [os.read(fd, max(size, 1))]
                while chunks[-1]:
                    chunks.append(os.read(fd, 65536))
                return b"".join(chunks)
            finally:
                os.close(fd)
        except OSError as exc:
            issue = Issue(display(self, rel), None, "", f"cannot read: {exc.strerror}")
            raise SpecError([issue]) from exc

    def is_file(self, rel: str) -> bool:
        return os.path.isfile(self._abs(rel))


class BundleSource:
    """An uploaded tree: relative path -> content. Paths are checked before anything is read."""

    def __init__(self, files: Mapping[str, bytes], display_root: str = "") -> None:
        self.display_root = display_root
        self.files = dict(files)
        self._dirs: dict[str, tuple[set[str], set[str]]] = {"": (set(), set())}
        problems: list[Issue] = []
        for path in self.files:
            reason = bundle_path_problem(path)
            if reason:
                problems.append(Issue(path, None, "", reason))
                continue
            parts = path.split("/")
            parent = ""
            for part in parts[:-1]:
                self._dirs.setdefault(parent, (set(), set()))[0].add(part)
                parent = join(parent, part)
                self._dirs.setdefault(parent, (set(), set()))
            self._dirs[parent][1].add(parts[-1])
        if problems:
            raise SpecError(problems)

    def listdir(self, rel: str) -> tuple[list[str], list[str]]:
        dirs, files = self._dirs.get(rel, (set(), set()))
        return sorted(dirs), sorted(files)

    def read(self, rel: str) -> bytes:
        try:
            return self.files[rel]
        except KeyError:
            raise SpecError([Issue(display(self, rel), None, "", "file not in bundle")]) from None

    def is_file(self, rel: str) -> bool:
        return rel in self.files


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by os as lone surrogates
        return False
    return True


def escape_name(name: str) -> str:
    """A file name that may hold undecodable bytes (as surrogates), printable and UTF-8 safe:
    each such byte becomes ``\\xNN``."""
    if _is_utf8(name):
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def bundle_path_problem(path: str) -> str | None:
    """Why ``path`` may not name a file in a bundle, or None when it may."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return "bundle paths must be relative, '/'-separated and non-empty"
    if len(path) > 1024:
        return "bundle path is longer than 1024 characters"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "bundle paths may not contain empty, '.' or '..' segments"
    if any(p.startswith(".") for p in parts):
        return "hidden files are not part of an enclaves tree"
    if len(parts[0]) == 2 and parts[0][1] == ":":  # a Windows drive, "C:/..."
        return "bundle paths must be relative"
    return None
