"""The dead-letter count of ``GET /status`` and ``nclav status`` (issue 14), on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nclav.cli.render import status_lines
from nclav.errors import TemporaryError
from nclav.runtime.dead_letters import dead_letter_count

if TYPE_CHECKING:
    import pytest


class Counting:
    def __init__(self, count: int | None = 3, error: Exception | None = None) -> None:
        self.count, self.error = count, error

    def dead_letter_count(self) -> int | None:
        if self.error is not None:
            raise self.error
        return self.count


class Plain:  # a queue without the capability (the local thread queue)
    def send(self, message: object, delay_s: float = 0) -> None: ...


def test_a_queue_that_counts_is_asked_one_that_cannot_is_none() -> None:
    assert dead_letter_count(Counting(3)) == 3
    assert dead_letter_count(Counting(None)) is None
    assert dead_letter_count(Plain()) is None


def test_a_count_that_fails_leaves_the_status_answering(caplog: pytest.LogCaptureFixture) -> None:
    assert dead_letter_count(Counting(error=TemporaryError("sqs: throttled"))) is None
    assert "not counted: sqs: throttled" in caplog.text


def test_nclav_status_shows_the_count_where_there_is_one() -> None:
    doc = {"enclave_count": 0, "default_cloud": "local", "active_drivers": ["local"]}
    assert not [x for x in status_lines({**doc, "dead_letters": None}) if "Dead" in x]
    assert "Dead-lettered messages: 0" in status_lines({**doc, "dead_letters": 0})
    (line,) = [x for x in status_lines({**doc, "dead_letters": 2}) if "Dead" in x]
    assert line.startswith("Dead-lettered messages: 2") and "redrive" in line
