"""Transient terraform failures (throttling, 5xx, dropped connections) are retried: the step
gets a TemporaryError until the partition's ``retry.max_attempts`` runs of the reconcile run
failed; other failures stay permanent. ``retry`` is not part of the partition's hash."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from nclav.config import load_directory as load_tree
from nclav.errors import PermanentError, SpecError, TemporaryError
from nclav.hashing import partition_hash
from nclav.iac.partition import PartitionIac
from nclav.local import DirectoryBlobStore, InMemoryStateStore
from nclav.model import PartitionConfig, RetrySettings, TerraformSettings
from nclav.ports import SystemClock

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.terraform


def failing_tool(tmp_path: Path, message: str) -> str:
    """A stand-in for terraform whose apply fails printing ``message``."""
    script = tmp_path / "failform"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = apply ]; then echo "Error: {message}" >&2; exit 1; fi\n'
        "if [ \"$1\" = output ]; then echo '{}'; fi\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def apply(iac: PartitionIac, config: PartitionConfig) -> None:
    iac.apply("run-1", "e", config, {"main.tf": b""}, {}, {}, update=False)


def make_iac(tmp_path: Path) -> PartitionIac:
    store, blobs = InMemoryStateStore(), DirectoryBlobStore(tmp_path / "blobs")
    return PartitionIac(store, blobs, SystemClock(), tmp_path / "ws")


def test_a_throttled_apply_is_temporary_until_max_attempts(tmp_path: Path) -> None:
    tool = failing_tool(tmp_path, "creating EC2 VPC: RequestLimitExceeded: Request limit exceeded.")
    config = PartitionConfig(
        id="p",
        name="p",
        terraform=TerraformSettings(tool=tool),
        retry=RetrySettings(max_attempts=3),
    )
    iac = make_iac(tmp_path)
    for attempt in (1, 2):
        with pytest.raises(TemporaryError, match=f"attempt {attempt} of 3") as caught:
            apply(iac, config)
        assert "RequestLimitExceeded" in str(caught.value)
        assert caught.value.retry_after_s == 30.0
    with pytest.raises(PermanentError, match="exited with code 1"):
        apply(iac, config)
    assert len(iac.store.list_iac_runs("e", "p")) == 3


def test_a_real_error_and_retry_off_stay_permanent(tmp_path: Path) -> None:
    bad = failing_tool(tmp_path, "Unsupported argument: an argument named foo is not expected")
    with pytest.raises(PermanentError):
        apply(
            make_iac(tmp_path),
            PartitionConfig(id="p", name="p", terraform=TerraformSettings(tool=bad)),
        )
    throttled = failing_tool(tmp_path, "ThrottlingException: Rate exceeded")
    config = PartitionConfig(
        id="p",
        name="p",
        terraform=TerraformSettings(tool=throttled),
        retry=RetrySettings(max_attempts=1),
    )
    with pytest.raises(PermanentError):
        apply(make_iac(tmp_path / "off"), config)
    # The defaults apply without a retry: key.
    default = PartitionConfig(id="p", name="p", terraform=TerraformSettings(tool=throttled))
    with pytest.raises(TemporaryError):
        apply(make_iac(tmp_path / "default"), default)


def test_retry_is_read_from_config_yml_and_leaves_the_hash_alone(tmp_path: Path) -> None:
    def tree(retry: str) -> Path:
        root = tmp_path / f"t{len(retry)}"
        (root / "e" / "p").mkdir(parents=True)
        (root / "e" / "config.yml").write_text("id: e\nname: e\ncloud: local\nregion: local-1\n")
        (root / "e" / "p" / "config.yml").write_text(f"id: p\nname: p\n{retry}")
        (root / "e" / "p" / "main.tf").write_text("")
        return root

    plain = load_tree(tree("")).enclaves[0].partitions[0]
    tuned = (
        load_tree(tree('retry:\n  max_attempts: 5\n  patterns: ["Quota exceeded"]\n'))
        .enclaves[0]
        .partitions[0]
    )
    assert tuned.config.retry == RetrySettings(max_attempts=5, patterns=("Quota exceeded",))
    assert partition_hash(plain) == partition_hash(tuned)
    with pytest.raises(SpecError, match="max_attempts"):
        load_tree(tree("retry:\n  max_attempts: 0\n"))
    with pytest.raises(SpecError, match="regular expression"):
        load_tree(tree('retry:\n  patterns: ["(unclosed"]\n'))
