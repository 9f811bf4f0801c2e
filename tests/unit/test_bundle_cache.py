"""The bundle cache is bounded by estimated bytes, not entries (issue 8: eight large bundles
held hundreds of MiB)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.bundle import pack, unpack
from nclav.local import DirectoryBlobStore
from nclav.model import Cloud
from nclav.service import Bundles, bundle_cost

if TYPE_CHECKING:
    from pathlib import Path

ENCLAVE = "id: e{n}\nname: E\ncloud: local\nregion: local\nnetwork: {{}}\n"
PARTITION = "id: p\nname: P\nbackend: terraform\n"


def bundle(n: int, pad: int) -> bytes:
    """A valid one-enclave bundle whose partition carries ``pad`` bytes of Terraform."""
    return pack(
        {
            f"e{n}/config.yml": ENCLAVE.format(n=n).encode(),
            f"e{n}/p/config.yml": PARTITION.encode(),
            f"e{n}/p/main.tf": b"#" * pad + b"\n",
        }
    )


def test_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    data = [bundle(n, 100_000) for n in range(6)]
    cost = bundle_cost(unpack(data[0]))
    bundles = Bundles(DirectoryBlobStore(tmp_path), Cloud.LOCAL, cache_bytes=int(cost * 2.5))
    digests = [str(bundles.put(d)["digest"]) for d in data]
    for digest in digests:
        bundles.load(digest)
        assert bundles.cached_bytes <= int(cost * 2.5)
    assert bundles.cached() == digests[-2:]  # the two most recently used fit
    bundles.load(digests[-2])  # a hit makes it the most recent
    bundles.load(digests[0])  # a miss evicts the least recently used
    assert bundles.cached() == [digests[-2], digests[0]]


def test_small_bundles_are_many_and_a_huge_one_stays_alone(tmp_path: Path) -> None:
    small = [bundle(n, 10) for n in range(10)]
    big = bundle(99, 300_000)
    bundles = Bundles(DirectoryBlobStore(tmp_path), Cloud.LOCAL, cache_bytes=200_000)
    digests = [str(bundles.put(d)["digest"]) for d in small]
    for digest in digests:
        bundles.load(digest)
    assert bundles.cached() == digests  # ten bundles of a few KiB fit the budget
    huge = str(bundles.put(big)["digest"])
    graph, files = bundles.load(huge)
    assert bundles.cached() == [huge]  # over the budget alone: kept, the rest dropped
    assert files["e99/p"]["main.tf"].startswith(b"###")
    assert bundles.cached_bytes == bundle_cost(unpack(big))
