"""``?wait=`` never outlives the runtime's time limit (issue 10): with ``time_left_s`` on the
request (the AWS API function sets it from its invocation) the wait is cut to the time left
less a margin, and the answer says so in ``X-Nclav-Wait-Capped``."""

from __future__ import annotations

import dataclasses

from nclav.api.http import ApiRequest
from nclav.api.routes import WAIT_CAPPED_HEADER, WAIT_MARGIN_S, _wait, _wait_headers


def request(wait: str, time_left_s: float | None) -> ApiRequest:
    built = ApiRequest.build("POST", f"/reconcile?wait={wait}")
    return dataclasses.replace(built, time_left_s=time_left_s)


def test_wait_is_cut_to_the_time_left_and_the_answer_says_so() -> None:
    capped = request("3600", 58.0)
    assert _wait(capped) == 58.0 - WAIT_MARGIN_S
    assert _wait_headers(capped) == {WAIT_CAPPED_HEADER: "53"}
    assert _wait(request("3600", 2.0)) == 0.0


def test_no_limit_or_a_short_wait_is_left_alone() -> None:
    assert _wait(request("3600", None)) == 3600.0
    assert _wait_headers(request("3600", None)) == {}
    assert _wait(request("10", 58.0)) == 10.0
    assert _wait_headers(request("10", 58.0)) == {}
