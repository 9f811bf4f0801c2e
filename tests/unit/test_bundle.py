"""Bundles: deterministic packing, content digests, and unpacking that trusts nothing."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import time
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from nclav.bundle import bundle_digest, pack, pack_directory, unpack
from nclav.config import load_bundle, load_directory
from nclav.errors import Issue, SpecError
from nclav.hashing import partition_hash
from support import EXAMPLES, enclave_files, write_tree

if TYPE_CHECKING:
    from pathlib import Path

    from nclav.config import Desired

PRODUCT_A = EXAMPLES / "product-a" / "enclaves"
MiB = 1024 * 1024


def only_issue(exc: pytest.ExceptionInfo[SpecError]) -> Issue:
    assert len(exc.value.issues) == 1, exc.value.issues
    return exc.value.issues[0]


def partition_hashes(desired: Desired) -> dict[tuple[str, str], str]:
    return {(e.id, p.id): partition_hash(p) for e in desired.enclaves for p in e.partitions}


class Zeros:
    """A file of ``size`` zero bytes that is never held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def member(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, object]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, io.BytesIO(data) if info.isreg() else None


def craft(*members: tuple[tarfile.TarInfo, object], tail: bytes = b"") -> bytes:
    """A gzip'd tar of exactly these members, written the way a hostile client could."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, fileobj in members:
            tar.addfile(info, fileobj)  # type: ignore[arg-type]
    return gzip.compress(raw.getvalue() + tail, mtime=0)


def refused(data: bytes, **limits: int) -> Issue:
    with pytest.raises(SpecError) as exc:
        unpack(data, **limits)
    return only_issue(exc)


# -- digest and packing ----------------------------------------------------------------------


def test_same_tree_same_digest_and_bytes_from_any_directory_and_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(PRODUCT_A, tree)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    results = []
    for cwd, spelling in [
        (tmp_path, "tree"),
        (tmp_path, "tree/"),
        (tmp_path, "./tree"),
        (elsewhere, "../../tree"),
        (elsewhere, "../../somewhere/../tree/"),
        (elsewhere, str(tree)),
        (elsewhere, f"{tree}/"),
        (tree, "."),
    ]:
        monkeypatch.chdir(cwd)
        digest, data, _ = pack_directory(spelling)
        results.append((digest, data))
    monkeypatch.chdir(tmp_path)
    results.append(pack_directory(PRODUCT_A)[:2])  # the same tree read from another place
    assert len(set(results)) == 1


def test_digest_is_the_digest_of_the_unpacked_files() -> None:
    digest, data, desired = pack_directory(PRODUCT_A)
    files = unpack(data)
    assert sorted(files) == sorted(desired.files_read)
    assert bundle_digest(files) == digest
    assert files == {rel: (PRODUCT_A / rel).read_bytes() for rel in desired.files_read}


def test_pack_is_byte_identical_whatever_the_order_of_the_mapping() -> None:
    files = {"b/config.yml": b"b", "a/config.yml": b"a", "a/p/main.tf": b"tf"}
    again = dict(reversed(list(files.items())))
    assert pack(files) == pack(again)
    assert bundle_digest(files) == bundle_digest(again)


def test_packed_archive_carries_no_time_owner_or_mode() -> None:
    data = pack({"z.tf": b"z", "a/config.yml": b"a: 1\n", "m/main.tf": b""})
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a/config.yml", "m/main.tf", "z.tf"]
    for m in members:
        assert m.type == tarfile.REGTYPE
        assert (m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime) == (0o644, 0, 0, "", "", 0)


def _tarfile_pack(files: dict[str, bytes]) -> bytes:
    """What ``pack`` wrote through ``TarFile.addfile`` before it built headers itself."""
    out = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size = len(files[path])
            info.mode = 0o644
            info.uname = info.gname = ""
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[path]))
    return out.getvalue()


def test_pack_writes_the_bytes_tarfile_writes_for_every_kind_of_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = {
        "a/config.yml": b"id: a\n",
        "a/p/main.tf": b"",  # empty: no content block
        "b/" + "x" * 98: b"y" * 512,  # a name filling the 100-byte field; a whole block
        "c/" + "x" * 99: b"z" * 513,  # one character over: a pax header
        "d/\u00e9t\u00e9/config.yml": b"\xc3\xa9",  # not ASCII: a pax header
        "e/big.tf": os.urandom(3 * MiB),  # over the megabyte handed to gzip at a time
        **{f"g{i:03d}/config.yml": f"id: g{i}\n".encode() for i in range(300)},
    }
    tobuf = tarfile.TarInfo.tobuf
    through_tarfile: list[str] = []

    def counted(self: tarfile.TarInfo, *args: object, **kwargs: object) -> bytes:
        through_tarfile.append(self.name)
        return tobuf(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tarfile.TarInfo, "tobuf", counted)
    packed = pack(files)
    # Only the paths a plain header cannot hold went through tarfile's header code.
    assert sorted(through_tarfile) == ["c/" + "x" * 99, "d/\u00e9t\u00e9/config.yml"]
    monkeypatch.undo()
    assert packed == _tarfile_pack(files)
    assert unpack(packed) == files


def test_digest_changes_with_any_path_or_content_and_its_framing_is_unambiguous() -> None:
    base = {"a/config.yml": b"id: a\n", "a/p/main.tf": b""}
    digests = {
        bundle_digest(base),
        bundle_digest({**base, "a/p/main.tf": b" "}),
        bundle_digest({"a/config.yml": b"id: a\n", "a/q/main.tf": b""}),
        bundle_digest({"a/config.yml": b"id: a\n"}),
        bundle_digest({}),
        bundle_digest({"ab": b"c"}),
        bundle_digest({"a": b"bc"}),
        bundle_digest({"a": b"", "b": b""}),
        bundle_digest({"a\x00b": b""}),
    }
    assert len(digests) == 9
    assert all(len(d) == 64 for d in digests)


def test_pack_unpack_round_trip() -> None:
    files = {
        "e/config.yml": b"id: e\n",
        "e/p/main.tf": b"",
        "e/p/modules/net/vars.tf": bytes(range(256)) * 10,
        "e/\u00fcn\u00efc\u00f8de/\u540d\u524d.tf": "caf\u00e9".encode(),
        "e/" + "long-" * 150 + "/x.tf": b"long path",
    }
    assert unpack(pack(files)) == files
    assert unpack(pack({})) == {}


def test_pack_refuses_paths_unpack_would_refuse() -> None:
    with pytest.raises(SpecError) as exc:
        pack({"../x": b"", "ok.tf": b"", "/abs": b""})
    assert [i.path for i in exc.value.issues] == ["../x", "/abs"]


# -- what pack_directory reads ---------------------------------------------------------------


def test_unpacked_bundle_loads_to_the_same_partition_hashes() -> None:
    digest, data, desired = pack_directory(PRODUCT_A)
    from_disk = partition_hashes(load_directory(PRODUCT_A))
    assert from_disk == partition_hashes(desired)
    assert from_disk == partition_hashes(load_bundle(unpack(data)))
    assert len(from_disk) == 3


def test_bundle_holds_only_what_the_loader_reads(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "tree",
        {
            **enclave_files("team/dev", p=""),
            "team/dev/p/vars.tf": "variable x {}\n",
            "team/dev/p/modules/m/main.tf": "",
            "team/dev/p/.terraform/providers/registry/provider.bin": b"\x7fELF",
            "team/dev/p/.terraform.lock.hcl": "",
            "team/dev/p/terraform.tfstate": "{}",
            "team/dev/p/terraform.tfstate.backup": "{}",
            "team/dev/p/terraform.tfstate.d/ws/terraform.tfstate": "{}",
            "team/dev/p/.hidden": "secret",
            "team/dev/notes/README.md": "not a partition",
            "team/dev/.env": "TOKEN=x",
            "team/README.md": "not an enclave",
            "docs/guide.md": "no config.yml here",
            ".git/config": "",
            ".hidden": "",
        },
    )
    digest, data, desired = pack_directory(root)
    files = unpack(data)
    assert sorted(files) == [
        "team/dev/config.yml",
        "team/dev/p/config.yml",
        "team/dev/p/main.tf",
        "team/dev/p/modules/m/main.tf",
        "team/dev/p/vars.tf",
    ]
    assert sorted(desired.files_read) == sorted(files)
    # Changing an ignored file changes nothing; changing a partition file changes the digest.
    (root / "team/dev/p/terraform.tfstate").write_text('{"serial": 2}')
    (root / "team/dev/p/.terraform/new").write_text("x")
    assert pack_directory(root)[0] == digest
    (root / "team/dev/p/vars.tf").write_text("variable y {}\n")
    assert pack_directory(root)[0] != digest


def test_symlink_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.tf": "password = 1\n"})
    root = write_tree(tmp_path / "tree", enclave_files("e", p=""))
    os.symlink(outside / "secret.tf", root / "e" / "p" / "secret.tf")
    with pytest.raises(SpecError) as exc:
        pack_directory(root)
    issue = only_issue(exc)
    assert issue.path == f"{root}/e/p/secret.tf"
    assert "symbolic link points outside the enclaves directory" in issue.message


def test_symlink_inside_the_tree_is_packed_as_a_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", {**enclave_files("e", p=""), "shared/vars.tf": "v\n"})
    os.symlink(root / "shared" / "vars.tf", root / "e" / "p" / "vars.tf")
    files = unpack(pack_directory(root)[1])
    assert files["e/p/vars.tf"] == b"v\n"


def test_broken_tree_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "tree", {**enclave_files("e", p=""), "e/p/config.yml": "id: p\nname: [\n"}
    )
    with pytest.raises(SpecError) as exc:
        pack_directory(root)
    issue = only_issue(exc)
    assert issue.path == f"{root}/e/p/config.yml"
    assert issue.line is not None


def test_tree_too_large_to_upload_is_refused_before_packing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tree(tmp_path / "tree", {**enclave_files("e", p=""), "e/p/big.tf": "x" * 200})
    monkeypatch.setattr("nclav.bundle.MAX_FILE_BYTES", 100)
    with pytest.raises(SpecError) as exc:
        pack_directory(root)
    issue = only_issue(exc)
    assert issue.path == f"{root}/e/p/big.tf" and "larger than 100 bytes" in issue.message


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        pack_directory(tmp_path / "nope")
    assert "does not exist" in only_issue(exc).message


# -- unpack refuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "path", "words"),
    [
        (
            [member("e/link.tf", type=tarfile.SYMTYPE, linkname="/etc/passwd")],
            "e/link.tf",
            "symbolic link",
        ),
        (
            [member("a.tf", b"x"), member("b.tf", type=tarfile.LNKTYPE, linkname="a.tf")],
            "b.tf",
            "hard link",
        ),
        ([member("tty", type=tarfile.CHRTYPE)], "tty", "device"),
        ([member("disk", type=tarfile.BLKTYPE)], "disk", "device"),
        ([member("pipe", type=tarfile.FIFOTYPE)], "pipe", "named pipe"),
        ([member("../x", b"x")], "../x", "'..' segments"),
        ([member("e/../../x", b"x")], "e/../../x", "'..' segments"),
        ([member("/abs", b"x")], "/abs", "relative"),
        ([member("/etc/cron.d/x", b"x")], "/etc/cron.d/x", "relative"),
        ([member("e\\..\\x", b"x")], "e\\..\\x", "'/'-separated"),
        ([member("C:/x", b"x")], "C:/x", "relative"),
        ([member("e/.terraform/x", b"x")], "e/.terraform/x", "hidden"),
        ([member("./e/config.yml", b"x")], "./e/config.yml", "'.'"),
        ([member("a.tf", b"1"), member("a.tf", b"2")], "a.tf", "duplicate"),
        ([member("a.tf", b"abcd", pax_headers={"GNU.sparse.map": "0,4"})], "a.tf", "sparse"),
    ],
)
def test_unpack_refuses_unsafe_members(
    members: list[tuple[tarfile.TarInfo, object]], path: str, words: str
) -> None:
    issue = refused(craft(*members))
    assert issue.path == path
    assert words in issue.message
    assert issue.line is None and issue.field == ""


def test_unpack_skips_directories() -> None:
    data = craft(member("e", type=tarfile.DIRTYPE), member("e/config.yml", b"id: e\n"))
    assert unpack(data) == {"e/config.yml": b"id: e\n"}


def test_unpack_refuses_a_path_that_is_both_a_file_and_a_directory() -> None:
    issue = refused(craft(member("e", b"x"), member("e/config.yml", b"y")))
    assert (issue.path, issue.message) == ("e", "is both a file and a directory")


def test_unpack_refuses_a_file_over_max_file_bytes() -> None:
    data = pack({"small.tf": b"x" * 100, "big.tf": b"x" * 101})
    issue = refused(data, max_file_bytes=100)
    assert issue.path == "big.tf" and "larger than 100 bytes" in issue.message
    assert len(unpack(data, max_file_bytes=101)) == 2


def test_unpack_refuses_a_total_over_max_bytes() -> None:
    data = pack({f"f{i}.tf": b"x" * 40 for i in range(3)})
    issue = refused(data, max_bytes=100)
    assert issue.path == "bundle" and "larger than 100 bytes" in issue.message
    assert len(unpack(data, max_bytes=120)) == 3


def test_unpack_refuses_too_many_files() -> None:
    data = pack({f"f{i}.tf": b"" for i in range(4)})
    issue = refused(data, max_files=3)
    assert issue.path == "bundle" and "more than 3 files" in issue.message
    assert len(unpack(data, max_files=4)) == 4


def test_unpack_refuses_too_many_entries_even_if_they_are_directories() -> None:
    data = craft(*(member(f"d{i}", type=tarfile.DIRTYPE) for i in range(7)))
    issue = refused(data, max_files=3)
    assert issue.path == "bundle" and "more than 6 entries" in issue.message


def test_unpack_refuses_a_huge_declared_member_without_reading_it() -> None:
    info = tarfile.TarInfo("zeros.tf")
    info.size = 50 * MiB
    data = craft((info, Zeros(info.size)))
    assert len(data) < MiB
    tracemalloc.start()
    started = time.perf_counter()
    try:
        issue = refused(data, max_bytes=MiB, max_file_bytes=64 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2
    assert peak < 4 * MiB
    assert issue.path == "bundle" and "larger than" in issue.message


def test_unpack_refuses_a_gzip_bomb_fast_and_in_bounded_memory() -> None:
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        chunk = bytes(MiB)
        for _ in range(50):
            gz.write(chunk)
    data = compressed.getvalue()
    assert len(data) < MiB
    tracemalloc.start()
    started = time.perf_counter()
    try:
        issue = refused(data, max_bytes=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2
    assert peak < 4 * MiB
    assert issue.path == "bundle" and "gzip bomb" in issue.message


def test_unpack_refuses_data_hidden_after_the_end_of_the_archive() -> None:
    tail = os.urandom(256 * 1024)
    issue = refused(craft(member("a.tf", b"x"), tail=tail))
    assert issue.path == "bundle"
    assert unpack(craft(member("a.tf", b"x"), tail=bytes(1024))) == {"a.tf": b"x"}


def test_unpack_refuses_data_after_the_gzip_stream() -> None:
    issue = refused(pack({"a.tf": b"x"}) + b"junk")
    assert issue.path == "bundle" and "after the end of its gzip stream" in issue.message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"this is not a bundle at all", "not gzip-compressed"),
        (b"", "not gzip-compressed"),
        (b"PK\x03\x04 a zip file", "not gzip-compressed"),
        (gzip.compress(b"plain text, not a tar archive " * 40, mtime=0), "not a valid gzip'd tar"),
        (b"\x1f\x8b\x08\x00garbage after a gzip magic", "not a valid gzip'd tar"),
    ],
)
def test_unpack_refuses_what_is_not_a_gzipped_tar(data: bytes, words: str) -> None:
    issue = refused(data)
    assert issue.path == "bundle" and words in issue.message


def test_unpack_refuses_a_truncated_bundle() -> None:
    data = pack({"a.tf": os.urandom(50_000), "b.tf": b"b"})
    for cut in (len(data) // 2, len(data) - 4):
        issue = refused(data[:cut])
        assert issue.path == "bundle"
