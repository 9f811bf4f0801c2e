"""Loading an enclaves tree from a directory or an uploaded bundle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.config._load import CONFIG, Desired, LoadedEnclave, LoadedPartition, load_tree
from nclav.config._source import BundleSource, DirectorySource, TreeSource, bundle_path_problem

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping


def load_directory(root: str | os.PathLike[str], display_root: str | None = None) -> Desired:
    """Load the enclaves tree under ``root``. Errors name files as ``display_root/...``."""
    return load_tree(DirectorySource(root, display_root))


def load_bundle(files: Mapping[str, bytes], display_root: str = "") -> Desired:
    """Load an enclaves tree from relative path -> content (what a client uploaded)."""
    return load_tree(BundleSource(files, display_root))


__all__ = [
    "CONFIG",
    "BundleSource",
    "Desired",
    "DirectorySource",
    "LoadedEnclave",
    "LoadedPartition",
    "TreeSource",
    "bundle_path_problem",
    "load_bundle",
    "load_directory",
    "load_tree",
]
