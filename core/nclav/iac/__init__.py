"""Terraform/OpenTofu: building a partition's workspace and running the tool in it."""

from __future__ import annotations

from nclav.iac.runner import (
    LOG_TAIL_LINES,
    Deadline,
    IacCommandError,
    IacOutputError,
    IacTimeoutError,
    TerraformRunner,
)
from nclav.iac.workspace import (
    BACKEND_FILE,
    CONTEXT_FILE,
    MANIFEST_FILE,
    MODULE_FILE,
    MODULE_NAME,
    OUTPUTS_FILE,
    HttpBackend,
    prepare_workspace,
    select_tool,
)

__all__ = [
    "BACKEND_FILE",
    "CONTEXT_FILE",
    "LOG_TAIL_LINES",
    "MANIFEST_FILE",
    "MODULE_FILE",
    "MODULE_NAME",
    "OUTPUTS_FILE",
    "Deadline",
    "HttpBackend",
    "IacCommandError",
    "IacOutputError",
    "IacTimeoutError",
    "TerraformRunner",
    "prepare_workspace",
    "select_tool",
]
