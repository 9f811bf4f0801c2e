"""google.api_core errors become core's errors in one place (functions_gcp._errors)."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from functions_gcp._errors import GcpServiceError, gcp_errors, translate
from nclav.errors import ConflictError, NotFoundError, TemporaryError


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (gexc.NotFound("no such document"), NotFoundError),
        (gexc.AlreadyExists("entity already exists"), ConflictError),
        (gexc.FailedPrecondition("stored version does not match"), ConflictError),
        (gexc.PreconditionFailed("conditionNotMet"), ConflictError),
        (gexc.Aborted("too much contention"), TemporaryError),
        (gexc.ServiceUnavailable("try later"), TemporaryError),
        (gexc.DeadlineExceeded("slow"), TemporaryError),
        (gexc.InternalServerError("oops"), TemporaryError),
        (gexc.RetryError("gave up", cause=None), TemporaryError),
        (gexc.PermissionDenied("no access"), GcpServiceError),
        (gexc.InvalidArgument("bad field"), GcpServiceError),
    ],
)
def test_each_error_gets_its_core_kind(exc: Exception, kind: type[Exception]) -> None:
    translated = translate(exc, "get enclave a")
    assert type(translated) is kind
    assert str(translated).startswith("get enclave a: ")


def test_throttling_waits_longer_than_a_transient_failure() -> None:
    throttled = translate(gexc.TooManyRequests("quota"), "write")
    unavailable = translate(gexc.ServiceUnavailable("down"), "write")
    assert isinstance(throttled, TemporaryError)
    assert isinstance(unavailable, TemporaryError)
    assert throttled.retry_after_s is not None and unavailable.retry_after_s is not None
    assert throttled.retry_after_s > unavailable.retry_after_s


def test_a_permanent_error_keeps_status_and_code() -> None:
    translated = translate(gexc.PermissionDenied("caller lacks datastore.entities.get"), "read")
    assert isinstance(translated, GcpServiceError)
    assert translated.status == 403
    assert "caller lacks datastore.entities.get" in str(translated)


def test_the_block_chains_the_sdk_error() -> None:
    with pytest.raises(NotFoundError) as caught, gcp_errors("get run r1"):
        raise gexc.NotFound("missing")
    assert isinstance(caught.value.__cause__, gexc.NotFound)
