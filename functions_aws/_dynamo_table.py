"""The store's only door to DynamoDB: every request goes through ``Table.call``.

``call`` runs each request inside ``translated`` (so SDK errors become nclav errors in one
place) and ``Table`` refuses, before sending, any item DynamoDB would reject for its size.
``Expr`` aliases every attribute name, so DynamoDB's reserved words (``status``, ``error``,
``action`` ...) never break an expression.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore import xform_name

from functions_aws._dynamo_errors import ItemTooLargeError, translated
from functions_aws._dynamo_keys import MAX_ITEM_BYTES, item_size
from functions_aws._errors import lazy_client
from nclav.errors import TemporaryError
from nclav.runtime import backoff

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from functions_aws._dynamo_errors import AttributeValue, Item

_BATCH_WRITE = 25  # DynamoDB's limits per request
_BATCH_GET = 100
_UNPROCESSED_ATTEMPTS = 8


class Expr:
    """The placeholders of one request's expressions."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # attribute -> placeholder
        self._values: dict[str, AttributeValue] = {}

    def n(self, attribute: str) -> str:
        if attribute not in self._names:
            self._names[attribute] = f"#n{len(self._names)}"
        return self._names[attribute]

    def v(self, value: AttributeValue) -> str:
        placeholder = f":v{len(self._values)}"
        self._values[placeholder] = value
        return placeholder

    def assign(self, attrs: Mapping[str, AttributeValue | None], bump: Sequence[str] = ()) -> str:
        """``SET`` attributes given a value, ``REMOVE`` those given ``None``, add 1 to ``bump``."""
        sets = [f"{self.n(k)} = {self.v(v)}" for k, v in attrs.items() if v is not None]
        if bump:
            one = self.v({"N": "1"})
            sets += [f"{self.n(k)} = {self.n(k)} + {one}" for k in bump]
        removes = [self.n(k) for k, v in attrs.items() if v is None]
        parts = []
        if sets:
            parts.append("SET " + ", ".join(sets))
        if removes:
            parts.append("REMOVE " + ", ".join(removes))
        return " ".join(parts)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._names:
            out["ExpressionAttributeNames"] = {p: a for a, p in self._names.items()}
        if self._values:
            out["ExpressionAttributeValues"] = dict(self._values)
        return out


def _check_size(item: Item) -> Item:
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        where = f"{item['pk']['S']} / {item['sk']['S']}"
        raise ItemTooLargeError(
            f"item {where} would be about {size:,} bytes; DynamoDB items hold {MAX_ITEM_BYTES:,}"
        )
    return item


class Table:
    def __init__(self, name: str, client: Any | None = None) -> None:
        self.name = name
        # Standard retry mode; connections for the threads of one process (lease heartbeats).
        self.client = (
            client
            if client is not None
            else lazy_client("dynamodb", retries={"mode": "standard"}, max_pool_connections=32)
        )

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One DynamoDB request, e.g. ``call("GetItem", Key=...)``, with errors translated."""
        method = getattr(self.client, xform_name(operation))
        with translated(operation):
            response: dict[str, Any] = method(**params)
        return response

    # -- single items --------------------------------------------------------------------------

    def get(self, key: Item, *, consistent: bool = True) -> Item | None:
        response = self.call("GetItem", TableName=self.name, Key=key, ConsistentRead=consistent)
        item: Item | None = response.get("Item")
        return item

    # The *_op methods build one request's parameters, for a single call or a transaction.
    # ``old`` asks for the stored item with a failed condition: one request then tells
    # "lost the condition" (an item comes back) from "no such item" (none does).

    def put_op(
        self,
        item: Item,
        condition: str | None = None,
        expr: Expr | None = None,
        *,
        old: bool = False,
    ) -> dict[str, Any]:
        op: dict[str, Any] = {"TableName": self.name, "Item": _check_size(item)}
        return _conditioned(op, condition, expr, old)

    def update_op(
        self, key: Item, update: str, expr: Expr, condition: str | None = None, *, old: bool = False
    ) -> dict[str, Any]:
        op: dict[str, Any] = {"TableName": self.name, "Key": key, "UpdateExpression": update}
        return _conditioned(op, condition, expr, old)

    def delete_op(
        self,
        key: Item,
        condition: str | None = None,
        expr: Expr | None = None,
        *,
        old: bool = False,
    ) -> dict[str, Any]:
        return _conditioned({"TableName": self.name, "Key": key}, condition, expr, old)

    def put(
        self,
        item: Item,
        condition: str | None = None,
        expr: Expr | None = None,
        *,
        old: bool = False,
    ) -> None:
        self.call("PutItem", **self.put_op(item, condition, expr, old=old))

    def update(
        self,
        key: Item,
        update: str,
        expr: Expr,
        condition: str | None = None,
        *,
        returns: str = "NONE",
        old: bool = False,
    ) -> Item:
        """Returns the attributes ``returns`` asks for (``ALL_NEW``, ``UPDATED_OLD``, ...)."""
        op = self.update_op(key, update, expr, condition, old=old)
        response = self.call("UpdateItem", **op, ReturnValues=returns)
        attributes: Item = response.get("Attributes", {})
        return attributes

    def delete(
        self,
        key: Item,
        condition: str | None = None,
        expr: Expr | None = None,
        *,
        old: bool = False,
    ) -> None:
        self.call("DeleteItem", **self.delete_op(key, condition, expr, old=old))

    def add_one(self, counter: Item) -> int:
        """Add 1 to the counter item's ``n`` (created at 0) and return the new value."""
        e = Expr()
        update = f"ADD {e.n('n')} {e.v({'N': '1'})}"
        return int(self.update(counter, update, e, returns="UPDATED_NEW")["n"]["N"])

    # -- many items ----------------------------------------------------------------------------

    def query(
        self,
        key_condition: str,
        expr: Expr,
        *,
        index: str | None = None,
        forward: bool = True,
        limit: int | None = None,
        consistent: bool = False,
    ) -> list[Item]:
        """Every item matching (page after page), or the first ``limit`` in key order."""
        params: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": key_condition,
            "ScanIndexForward": forward,
            **expr.params(),
        }
        if index is not None:
            params["IndexName"] = index
        else:
            params["ConsistentRead"] = consistent
        items: list[Item] = []
        while limit is None or len(items) < limit:
            if limit is not None:
                params["Limit"] = limit - len(items)
            page = self.call("Query", **params)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items

    def transact(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """``actions`` are ``{"Put": put_op(...)}``, ``{"Update": ...}``, ... (at most 100)."""
        self.call("TransactWriteItems", TransactItems=list(actions))

    def batch_write(self, puts: Sequence[Item] = (), deletes: Sequence[Item] = ()) -> None:
        """Unconditional puts and deletes (by key), 25 to a request, retrying the unprocessed."""
        requests = [{"PutRequest": {"Item": _check_size(i)}} for i in puts]
        requests += [{"DeleteRequest": {"Key": k}} for k in deletes]
        for start in range(0, len(requests), _BATCH_WRITE):
            pending: dict[str, Any] = {self.name: requests[start : start + _BATCH_WRITE]}
            self._drain("BatchWriteItem", "RequestItems", "UnprocessedItems", pending)

    def batch_get(self, keys: Sequence[Item]) -> list[Item]:
        """Consistent reads of ``keys`` (in no particular order; missing ones are absent)."""
        unique = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
        found: list[Item] = []
        for start in range(0, len(unique), _BATCH_GET):
            pending: dict[str, Any] = {
                self.name: {"Keys": unique[start : start + _BATCH_GET], "ConsistentRead": True}
            }
            for response in self._drain("BatchGetItem", "RequestItems", "UnprocessedKeys", pending):
                found.extend(response.get("Responses", {}).get(self.name, []))
        return found

    def _drain(
        self, operation: str, param: str, leftover: str, pending: dict[str, Any]
    ) -> list[dict[str, Any]]:
        # A batch may come back partly done under load; the rest is retried with backoff
        # (what AWS asks of every caller of the batch APIs).
        responses = []
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            response = self.call(operation, **{param: pending})
            responses.append(response)
            pending = response.get(leftover) or {}
            if not pending:
                return responses
            time.sleep(backoff(attempt + 1, 0.05, 2.0, jitter=0.5))
        raise TemporaryError(f"{operation}: DynamoDB left items unprocessed", retry_after_s=5.0)


def _conditioned(
    op: dict[str, Any], condition: str | None, expr: Expr | None, old: bool
) -> dict[str, Any]:
    if condition is not None:
        op["ConditionExpression"] = condition
    if expr is not None:
        op.update(expr.params())
    if old:
        op["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return op


__all__ = ["Expr", "Table"]
