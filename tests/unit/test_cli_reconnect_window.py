"""$NCLAV_RECONNECT_TIMEOUT: how long `apply`/`runs show --follow` retry a server that went away
(the behaviour itself: tests/e2e/test_cli_reconnect.py, against a real server)."""

from __future__ import annotations

import pytest

from nclav.cli.common import InvalidError
from nclav.cli.follow import DEFAULT_RECONNECT_S, reconnect_window


def test_default_and_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NCLAV_RECONNECT_TIMEOUT", raising=False)
    assert reconnect_window() == DEFAULT_RECONNECT_S == 30.0
    monkeypatch.setenv("NCLAV_RECONNECT_TIMEOUT", "2.5")
    assert reconnect_window() == 2.5
    monkeypatch.setenv("NCLAV_RECONNECT_TIMEOUT", "0")
    assert reconnect_window() == 0.0


@pytest.mark.parametrize("bad", ["-1", "soon", "nan", "inf"])
def test_a_bad_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("NCLAV_RECONNECT_TIMEOUT", bad)
    with pytest.raises(InvalidError, match="NCLAV_RECONNECT_TIMEOUT must be a number"):
        reconnect_window()
