"""DynamoDB failures as nclav errors: the one place where botocore exceptions are caught.

Every request the state store makes runs inside ``translated``, so no botocore exception
leaves the adapter; the original is always chained as ``__cause__``::

    NclavError
    ├── ConflictError
    │   └── ConditionFailedError   a condition lost (ConditionalCheckFailedException, or a
    │                              TransactionCanceledException with a ConditionalCheckFailed
    │                              reason); carries the stored item(s) (core's docstore error)
    ├── ReconcileError
    │   └── TemporaryError         throttling, a 5xx, a dropped connection: retry later
    │       └── ContendedError     a transaction cancelled only by other transactions in flight
    └── DynamoStoreError           anything else (missing table, access denied, bad request)
        └── ItemTooLargeError      a record that would not fit in a 400 KB item

DynamoDB adds two things to ``_errors.translate`` of the other adapters: a lost condition
carries the stored item the store reports on, and its ResourceNotFoundException is a missing
*table* (not a missing record, so never a ``NotFoundError``): whatever is not temporary is a
``DynamoStoreError``.

Botocore already retries throttling and 5xx responses with backoff before they get here, so
a ``TemporaryError`` means those retries ran out: the caller should wait longer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from functions_aws._errors import error_code, http_status
from functions_aws._errors import translate as translate_aws
from nclav.docstore.port import ConditionFailedError, ContendedError
from nclav.errors import NclavError, ServiceError, TemporaryError
from nclav.runtime.stores import RecordTooLargeError

if TYPE_CHECKING:
    from collections.abc import Iterator

_CONDITION_FAILED = "ConditionalCheckFailedException"
_CANCELLED = "TransactionCanceledException"
# Cancellation reasons that say "someone else was busy with this item", not "your request
# is wrong": the same transaction can succeed a moment later.
_BUSY_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_RETRY_AFTER_S = 2.0


class DynamoStoreError(ServiceError):
    """A DynamoDB failure that retrying will not fix (missing table, permissions, bad input)."""


class ItemTooLargeError(DynamoStoreError, RecordTooLargeError):
    """A record that does not fit in one DynamoDB item, even compressed."""


def _cancelled(exc: ClientError, operation: str) -> NclavError:
    reasons_raw = cast("list[dict[str, Any]]", exc.response.get("CancellationReasons") or [])
    reasons = tuple(str(r.get("Code") or "None") for r in reasons_raw)
    items = tuple(r.get("Item") for r in reasons_raw)
    if "ConditionalCheckFailed" in reasons:
        return ConditionFailedError(
            f"{operation}: a condition failed ({', '.join(reasons)})", reasons=reasons, items=items
        )
    if reasons and all(r in _BUSY_REASONS or r == "None" for r in reasons):
        return ContendedError(
            f"{operation}: items busy in other transactions", retry_after_s=_RETRY_AFTER_S
        )
    return DynamoStoreError(f"{operation}: transaction cancelled ({', '.join(reasons)})")


def translate(exc: Exception, operation: str) -> NclavError:
    """The nclav error for a botocore exception raised by ``operation``."""
    code = error_code(exc) if isinstance(exc, ClientError) else ""
    if code == _CONDITION_FAILED:
        item = cast("ClientError", exc).response.get("Item")
        return ConditionFailedError(f"{operation}: condition failed", item=item)
    if code == _CANCELLED:
        return _cancelled(cast("ClientError", exc), operation)
    general = translate_aws(exc, operation)
    if isinstance(general, TemporaryError):
        return TemporaryError(str(general), retry_after_s=_RETRY_AFTER_S)
    status = http_status(exc) if isinstance(exc, ClientError) else 0
    return DynamoStoreError(str(general), status=status, code=code)


@contextmanager
def translated(operation: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, operation) from exc


__all__ = [
    "ConditionFailedError",
    "ContendedError",
    "DynamoStoreError",
    "ItemTooLargeError",
    "translate",
    "translated",
]
