"""The run engine: runs, steps, leases, retries, fan-out, the sweeper; drivers; Terraform steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.engine.driver import Driver, LocalDriver
from nclav.engine.engine import Engine
from nclav.engine.steps import StepContext, carry_out
from nclav.iac.partition import PartitionIac  # re-exported: it moved to nclav.iac

if TYPE_CHECKING:
    from nclav.ports import IacRunner

    def _implements(iac: PartitionIac, driver: LocalDriver) -> tuple[IacRunner, Driver]:
        return iac, driver  # mypy proves the implementations fit their ports


__all__ = ["Driver", "Engine", "LocalDriver", "PartitionIac", "StepContext", "carry_out"]
