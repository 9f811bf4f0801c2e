"""What ``nclav.iac`` keeps in the ports, on every adapter: IaC run fields, log chunks,
saved workspaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.iac.logs import LogShipper, log_prefix, read_chunks, read_log
from nclav.iac.sandbox import restore_workspace, save_workspace, workspace_blob
from nclav.records import IacOperation, IacRun, iso_time

if TYPE_CHECKING:
    from pathlib import Path

    from nclav.ports import BlobStore, StateStore


def test_iac_run_keeps_its_process_group_and_log_head(store: StateStore) -> None:
    run = IacRun(
        enclave_id="e",
        partition_id="p",
        operation=IacOperation.PROVISION,
        started_at=iso_time(1_767_225_600.0),
        log_chunks="iac-logs/e/p/x",
    )
    store.put_iac_run(run)
    fields = {"pgid": 4242, "host": "worker-1", "boot_id": "b00t", "log_size": 1234}
    store.put_iac_run(run.model_copy(update=fields))
    got = store.get_iac_run(run.id)
    assert got is not None
    assert (got.pgid, got.host, got.boot_id, got.log_size, got.log_chunks) == (
        4242,
        "worker-1",
        "b00t",
        1234,
        "iac-logs/e/p/x",
    )


def test_log_chunks_are_read_whole_and_from_an_offset(blobs: BlobStore) -> None:
    prefix = log_prefix("e", "p", "run")
    shipper = LogShipper(blobs, prefix, timer=False)
    shipper.write("first")
    shipper.flush()
    assert read_chunks(blobs, prefix) == b"first\n"  # readable while the run goes on
    shipper.write("second")
    shipper.write("third")
    size = shipper.close()
    whole = b"first\nsecond\nthird\n"
    assert size == len(whole) and read_chunks(blobs, prefix) == whole
    assert read_chunks(blobs, prefix, 8) == whole[8:]
    run = IacRun(
        enclave_id="e",
        partition_id="p",
        operation=IacOperation.PROVISION,
        started_at="t",
        log_chunks=prefix,
    )
    assert read_log(blobs, run, 6) == b"second\nthird\n"


def test_a_saved_workspace_comes_back_elsewhere(blobs: BlobStore, tmp_path: Path) -> None:
    workdir = tmp_path / "a" / "e" / "p"
    (workdir / "modules").mkdir(parents=True)
    (workdir / ".nclav-manifest.json").write_text(
        '{"version": 1, "files": ["main.tf", "modules/m.tf"]}'
    )
    (workdir / "main.tf").write_text("# main\n")
    (workdir / "modules" / "m.tf").write_text("# module\n")
    (workdir / "terraform.tfstate").write_text("not nclav's")
    save_workspace(blobs, workdir, "e", "p")
    assert blobs.exists(workspace_blob("e", "p"))
    fresh = tmp_path / "b" / "e" / "p"
    assert restore_workspace(blobs, fresh, "e", "p")
    assert (fresh / "modules" / "m.tf").read_text() == "# module\n"
    assert not (fresh / "terraform.tfstate").exists()
