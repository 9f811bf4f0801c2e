"""Moved: ``PartitionIac`` lives in ``nclav.iac.partition`` (kept importable from here)."""

from __future__ import annotations

from nclav.iac.partition import LOG_TAIL, PartitionIac

__all__ = ["LOG_TAIL", "PartitionIac"]
