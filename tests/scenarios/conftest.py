"""The ``runtime`` fixture: each scenario runs once per runtime in ``runtimes.RUNTIMES``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The AWS driver builds on the AWS harness (moto resources, the SQS pump); the scenarios use
# the end-to-end harness's terraform check.
for _harness in ("aws", "azure", "e2e"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / _harness))

from runtimes import RUNTIMES, Runtime, open_runtime  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(params=RUNTIMES)
def runtime(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Runtime]:
    if request.param == "aws":
        request.getfixturevalue("aws")  # a clean moto state behind boto3
        yield from _aws_runtime(tmp_path, monkeypatch)
        return
    if request.param == "azure":  # Azurite and cosmosdb-server (tests/azure_stand_ins.py)
        stand_ins = {
            "storage": request.getfixturevalue("azure_storage"),
            "cosmos": request.getfixturevalue("cosmos"),
            "cosmos_endpoint": request.getfixturevalue("cosmos_server"),
        }
        with open_runtime("azure", tmp_path, monkeypatch, **stand_ins) as opened:
            yield opened
        return
    if request.param == "gcp":
        from runtime_gcp import prepare

        prepare(request, monkeypatch)  # the Firestore, GCS and Cloud Tasks stand-ins
    with open_runtime(request.param, tmp_path, monkeypatch) as opened:
        yield opened


def _aws_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The AWS runtime, with what its handlers change in the process put back after it: the
    installed runtime, and the JSON log routing (which stops the ``nclav`` loggers from
    propagating, and other tests' caplog relies on that)."""
    from functions_aws import bootstrap

    saved = {
        name: (logger.handlers[:], logger.propagate, logger.level)
        for name in ("nclav", "functions_aws")
        for logger in (logging.getLogger(name),)
    }
    bootstrap.install(None)
    try:
        with open_runtime("aws", tmp_path, monkeypatch) as opened:
            yield opened
    finally:
        bootstrap.install(None)
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate, logger.level = handlers, propagate, level
        bootstrap._logs_routed = False  # noqa: SLF001
