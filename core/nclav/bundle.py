"""Bundles: an enclaves tree packed as a deterministic, content-addressed gzip'd tar.

The CLI packs exactly the files the loader reads (``pack_directory``) and uploads them; the
server unpacks them in memory (``unpack``, never to disk) and addresses them by
``bundle_digest``, which depends only on the paths and contents, never on the archive's bytes,
the working directory or how the tree's root was spelled.

``unpack`` trusts nothing in the archive: every member must be a regular file with a safe
relative path, and sizes are bounded from the headers and again while reading, with the gzip
stream inflated a bounded amount at a time, so neither a lying header nor a gzip bomb can
exhaust memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from typing import TYPE_CHECKING

from nclav.config import Desired, DirectorySource, bundle_path_problem, load_tree
from nclav.errors import Issue, SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping

MiB = 1024 * 1024
MAX_BYTES = 64 * MiB  # total uncompressed content of a bundle
MAX_FILES = 100_000  # the 1,000 x 10 synthetic tree alone has 21,000
MAX_FILE_BYTES = 16 * MiB

_BUNDLE = "bundle"  # Issue.path of problems that concern the whole archive
_DIGEST_TAG = b"nclav-bundle-v1\x00"
_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 64 * 1024
# Tar bytes a member may use besides its padded content: its header, a pax or GNU long-name
# header for a path of up to 1024 characters, with room to spare.
_MEMBER_OVERHEAD = 8 * 1024
# What may follow the end-of-archive marker: the zero blocks that pad the last record.
_TRAILER = 64 * 1024


def bundle_digest(files: Mapping[str, bytes]) -> str:
    """The sha256 (hex) of a tree: its sorted paths, each with the sha256 of its content.

    Every path is length-prefixed and every content hash has a fixed length, so no two
    different trees share a listing.
    """
    h = hashlib.sha256(_DIGEST_TAG)
    h.update(len(files).to_bytes(8, "big"))
    for path in sorted(files):
        name = path.encode("utf-8", "surrogatepass")
        h.update(len(name).to_bytes(8, "big"))
        h.update(name)
        h.update(hashlib.sha256(files[path]).digest())
    return h.hexdigest()


def _path_problem(path: str) -> str | None:
    reason = bundle_path_problem(path)
    if reason:
        return reason
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "bundle paths must be valid UTF-8"
    return None


def _tar_header(path: str, size: int) -> bytes:
    """The header ``tarfile`` writes for a packed member (PAX format, mode 0644, owner 0:0 and
    no names, time 0), built directly for the usual path: ASCII and at most 100 characters,
    which needs no extended header.

    ``tarfile``'s general header code costs ~15 us a member, most of the packing time of a
    large tree (the 1,000 x 10 synthetic tree has 21,000 files); this costs a quarter of
    that. Any other path, and a size too large for the octal field, goes through ``tarfile``.
    """
    if len(path) > _NAME_FIELD or not path.isascii() or size >= _MAX_OCTAL_SIZE:
        info = tarfile.TarInfo(path)
        info.type = tarfile.REGTYPE
        info.size = size
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    head = path.encode("ascii").ljust(_NAME_FIELD, b"\0") + _MODE_OWNER + b"%011o\0" % size
    # The checksum is the sum of the header's bytes with its own field read as spaces.
    checksum = _FIXED_SUM + sum(head)
    return head + _TIME + b"%06o\0 " % checksum + _AFTER_CHECKSUM


_NAME_FIELD = 100
_MAX_OCTAL_SIZE = 8**11  # an 11-digit octal size field
_MODE_OWNER = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid
_TIME = b"00000000000\0"  # mtime 0
# Type "0" (regular file), no link name, "ustar\000" magic and version, empty user and group
# names, device numbers left empty as tarfile leaves them for a regular file, no prefix.
_AFTER_CHECKSUM = (b"0" + b"\0" * 100 + b"ustar\x0000").ljust(_BLOCK - 156, b"\0")
_FIXED_SUM = sum(_TIME) + sum(b" " * 8) + sum(_AFTER_CHECKSUM)
_FLUSH_BYTES = 1 << 20  # tar bytes handed to gzip at a time


def pack(files: Mapping[str, bytes]) -> bytes:
    """A gzip'd tar of ``files``: identical bytes for identical files, whenever packed.

    Members are sorted regular files with mode 0644, owner 0:0 and no names, time 0; the gzip
    header carries time 0 and no file name. Paths ``unpack`` would refuse raise SpecError.

    The tar stream is the one ``tarfile`` writes (same bytes), assembled here and handed to
    gzip a megabyte at a time: ``TarFile.addfile`` copies each member's header record and
    writes to gzip three times a member, which took most of the time on large trees.
    """
    problems = [Issue(p, None, "", r) for p in sorted(files) if (r := _path_problem(p))]
    if problems:
        raise SpecError(problems)
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0) as gz:
        parts: list[bytes] = []
        pending = 0
        offset = 0
        for path in sorted(files):
            data = files[path]
            header = _tar_header(path, len(data))
            padding = -len(data) % _BLOCK
            parts += (header, data, b"\0" * padding)
            size = len(header) + len(data) + padding
            pending += size
            offset += size
            if pending >= _FLUSH_BYTES:
                gz.write(b"".join(parts))
                parts.clear()
                pending = 0
        # End of archive: two zero blocks, then zeros up to a whole record, as tarfile closes.
        end = offset + 2 * _BLOCK
        parts.append(b"\0" * (2 * _BLOCK + (-end % tarfile.RECORDSIZE)))
        gz.write(b"".join(parts))
    return out.getvalue()


class _Exceeded(Exception):
    """The inflated stream grew past what its members account for."""


class _Inflater:
    """A read-only stream of the gunzipped ``data``, inflating no more than each read asks for
    (a negative size reads one chunk).

    Reading past ``limit`` inflated bytes raises ``_Exceeded``; the caller raises the limit
    as it accepts members, so the stream never inflates more than the members account for.
    """

    def __init__(self, data: bytes, limit: int) -> None:
        self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
        self._pending = data
        self.limit = limit
        self.total = 0

    @property
    def finished(self) -> bool:
        return self._zlib.eof

    @property
    def trailing(self) -> bool:
        """Whether bytes follow the end of the gzip stream."""
        return bool(self._zlib.unused_data)

    def read(self, size: int = -1, /) -> bytes:
        want = _CHUNK if size < 0 else size
        parts: list[bytes] = []
        got = 0
        while got < want and not self._zlib.eof:
            room = self.limit - self.total
            if room <= 0:
                raise _Exceeded
            chunk = self._zlib.decompress(self._pending, min(want - got, room))
            self._pending = self._zlib.unconsumed_tail
            if not chunk:
                if not self._pending:
                    break  # input exhausted before the end of the gzip stream
                continue
            self.total += len(chunk)
            got += len(chunk)
            parts.append(chunk)
        return b"".join(parts)

    # The rest of what tarfile's file protocol names; a stream is only ever read forwards.
    def tell(self) -> int:
        return self.total

    def write(self, b: bytes, /) -> object:
        raise io.UnsupportedOperation("write")

    def seek(self, pos: int, /) -> object:
        raise io.UnsupportedOperation("seek")

    def close(self) -> object:
        return None


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _fail(path: str, message: str) -> SpecError:
    return SpecError([Issue(path, None, "", message)])


def _member_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"symbolic links are not allowed in a bundle (points to {member.linkname!r})"
    if member.islnk():
        return f"hard links are not allowed in a bundle (links to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device files are not allowed in a bundle"
    if member.isfifo():
        return "named pipes are not allowed in a bundle"
    if member.sparse is not None or member.type == tarfile.GNUTYPE_SPARSE:
        return "sparse files are not allowed in a bundle"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return f"unsupported tar member type {member.type!r}: only regular files are allowed"
    return _path_problem(member.name)


def unpack(
    data: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_files: int = MAX_FILES,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> dict[str, bytes]:
    """The files of a packed bundle (path -> content), read in memory and never extracted.

    Raises SpecError for anything but regular files with safe relative paths, for duplicate
    paths, for more than ``max_files`` files, for a file over ``max_file_bytes`` or a total
    over ``max_bytes`` (uncompressed), and for data that is not a gzip'd tar.
    """
    if not data.startswith(b"\x1f\x8b"):
        raise _fail(_BUNDLE, "bundle is not gzip-compressed: expected a gzip'd tar (.tar.gz)")
    stream = _Inflater(data, _MEMBER_OVERHEAD + _TRAILER)
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    total = 0  # content bytes of the accepted files
    entries = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8") as tar:
            for member in tar:
                entries += 1
                if entries > 2 * max_files:  # directories included; each is a TarInfo kept
                    raise _fail(_BUNDLE, f"bundle has more than {2 * max_files} entries")
                if member.isdir():
                    stream.limit += _MEMBER_OVERHEAD
                    continue
                name = member.name
                problem = _member_problem(member)
                if problem:
                    raise _fail(name, problem)
                if name in files:
                    raise _fail(name, "duplicate file in bundle")
                if len(files) >= max_files:
                    raise _fail(_BUNDLE, f"bundle has more than {max_files} files")
                size = member.size
                if size < 0:
                    raise _fail(name, "tar header has a negative size")
                if size > max_file_bytes:
                    raise _fail(name, f"file is larger than {max_file_bytes} bytes")
                if total + size > max_bytes:
                    raise _fail(_BUNDLE, f"bundle is larger than {max_bytes} bytes uncompressed")
                total += size
                stream.limit += _padded(size) + _MEMBER_OVERHEAD
                files[name] = _read_member(tar, member, min(size, max_file_bytes))
                parts = name.split("/")
                dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            # Drain the rest: nothing but end-of-archive padding may follow the last member.
            while stream.read(_CHUNK):
                pass
    except _Exceeded:
        raise _fail(
            _BUNDLE, "bundle holds more data than its files account for (a gzip bomb?)"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeError, ValueError) as exc:
        raise _fail(_BUNDLE, f"bundle is not a valid gzip'd tar archive: {exc}") from None
    if not stream.finished:
        raise _fail(_BUNDLE, "bundle is truncated: the gzip stream ends early")
    if stream.trailing:
        raise _fail(_BUNDLE, "bundle has unexpected data after the end of its gzip stream")
    clashes = sorted(dirs & files.keys())
    if clashes:
        raise SpecError([Issue(p, None, "", "is both a file and a directory") for p in clashes])
    return files


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    """The member's content, refusing it as soon as more than ``limit`` bytes come out."""
    fh = tar.extractfile(member)
    if fh is None:  # not a regular file: refused before reaching here
        raise _fail(member.name, "not a regular file")
    parts: list[bytes] = []
    got = 0
    with fh:
        while True:
            chunk = fh.read(min(_CHUNK, limit - got + 1))
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise _fail(member.name, "file holds more data than its tar header says")
            parts.append(chunk)
    if got != member.size:
        raise _fail(member.name, "file holds less data than its tar header says")
    return b"".join(parts)


class _Recording:
    """A directory tree that keeps what the loader read, so the bundle is what was validated."""

    def __init__(self, inner: DirectorySource) -> None:
        self.inner = inner
        self.display_root = inner.display_root
        self.contents: dict[str, bytes] = {}

    def listdir(self, rel: str) -> tuple[list[str], list[str]]:
        return self.inner.listdir(rel)

    def read(self, rel: str) -> bytes:
        data = self.inner.read(rel)
        self.contents[rel] = data
        return data

    def is_file(self, rel: str) -> bool:
        return self.inner.is_file(rel)


def pack_directory(root: str | os.PathLike[str]) -> tuple[str, bytes, Desired]:
    """Load the enclaves tree under ``root`` and pack exactly the files the loader read.

    Returns (digest, packed bytes, the loaded tree). A broken tree, a symbolic link leading
    out of it, or a tree too large to upload raises SpecError. The same as
    ``load_directory(root)`` plus packing, with each file read once: the bundle holds the
    very bytes that were validated, even if the tree changes meanwhile.
    """
    if "\0" in os.fspath(root):  # the OS would refuse it with a bare ValueError
        issue = Issue(repr(os.fspath(root)), None, "", "a directory path cannot contain NUL")
        raise SpecError([issue])
    source = _Recording(DirectorySource(root))
    desired = load_tree(source)
    files = {rel: source.contents[rel] for rel in desired.files_read}
    total = sum(len(v) for v in files.values())
    problems = [
        Issue(source.display_root, None, "", message)
        for message, bad in (
            (f"enclaves tree has more than {MAX_FILES} files", len(files) > MAX_FILES),
            (f"enclaves tree is larger than {MAX_BYTES} bytes", total > MAX_BYTES),
        )
        if bad
    ]
    base = source.display_root.rstrip("/")
    problems += [
        Issue(f"{base}/{rel}" if base else rel, None, "", f"larger than {MAX_FILE_BYTES} bytes")
        for rel, data in sorted(files.items())
        if len(data) > MAX_FILE_BYTES
    ]
    if problems:
        raise SpecError(problems)
    return bundle_digest(files), pack(files), desired


__all__ = [
    "MAX_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "bundle_digest",
    "pack",
    "pack_directory",
    "unpack",
]
