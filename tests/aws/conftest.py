"""Fixtures of the AWS runtime tests: a deployment in moto, and logging put back after each."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from aws_harness import Deployment, Pump

from functions_aws import bootstrap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _isolated_runtime() -> Iterator[None]:
    """Each test builds its own runtime; the JSON log routing of a handler is undone after it
    (it makes the ``nclav`` loggers stop propagating, which other tests' caplog relies on)."""
    saved = {
        name: (logger.handlers[:], logger.propagate, logger.level)
        for name in ("nclav", "functions_aws")
        for logger in (logging.getLogger(name),)
    }
    bootstrap.install(None)
    try:
        yield
    finally:
        bootstrap.install(None)
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate, logger.level = handlers, propagate, level
        bootstrap._logs_routed = False  # noqa: SLF001


@pytest.fixture
def make_deployment(
    aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Deployment]:
    """``make_deployment(NCLAV_X="..", ...)``: resources in moto and the functions' env."""

    def make(**env: str) -> Deployment:
        return Deployment(monkeypatch, tmp_path, **env)

    return make


@pytest.fixture
def deployment(make_deployment: Callable[..., Deployment]) -> Deployment:
    return make_deployment()


@pytest.fixture
def pump(deployment: Deployment) -> Pump:
    return Pump(deployment)
