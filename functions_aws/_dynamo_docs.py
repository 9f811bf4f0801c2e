"""``DynamoDocuments``: core's documents port (``nclav.docstore.port``) on one DynamoDB table.

Every request goes through ``call``, which translates SDK errors in one place
(``_dynamo_errors``). A port condition becomes a ``ConditionExpression`` and a patch an
``UpdateExpression`` (SET / REMOVE / ADD), so every compare-and-swap stays one server-side
request; a lost condition returns the stored item (``ReturnValuesOnConditionCheckFailure``),
so one request tells "lost" from "no such item". Every attribute name is aliased, so
DynamoDB's reserved words (``status``, ``error`` ...) never break an expression.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from botocore import xform_name

from functions_aws._dynamo_errors import ItemTooLargeError, translated
from functions_aws._errors import lazy_client
from nclav.docstore.port import ConditionFailedError, Delete, Patch, Put, doc_size
from nclav.errors import TemporaryError
from nclav.runtime import backoff

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nclav.docstore.port import Cond, Doc, Key, Query, Write

_BATCH_WRITE, _BATCH_GET, _UNPROCESSED_ATTEMPTS = 25, 100, 8  # DynamoDB's limits per request
MAX_ITEM_BYTES = 400 * 1024


def attr(value: Any) -> dict[str, Any]:
    """A plain value (text, number, bool, bytes, a list of them) as an attribute value."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):  # repr() of a float round-trips; DynamoDB keeps 38 digits
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    return {"L": [attr(v) for v in value]}


def plain(value: dict[str, Any]) -> Any:
    """The plain value of an attribute value (``attr`` reversed)."""
    (kind, inner), *_ = value.items()
    if kind == "N":
        return float(inner) if any(c in inner for c in ".eE") else int(inner)
    return [plain(v) for v in inner] if kind == "L" else inner


def doc_of(item: dict[str, Any] | None) -> Doc | None:
    return None if item is None else {name: plain(v) for name, v in item.items()}


def item_key(key: Key) -> dict[str, Any]:
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


class _Expr:
    """The placeholders of one request's expressions."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # attribute -> placeholder
        self.values: dict[str, Any] = {}

    def n(self, attribute: str) -> str:
        return self.names.setdefault(attribute, f"#n{len(self.names)}")

    def v(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = attr(value)
        return placeholder

    def cond(self, c: Cond) -> str:
        if c.op in ("and", "or"):
            return f" {c.op.upper()} ".join(f"({self.cond(p)})" for p in c.parts)
        if c.op in ("exists", "absent"):
            return f"attribute_{'' if c.op == 'exists' else 'not_'}exists({self.n(c.name)})"
        if c.op == "in":
            return f"{self.n(c.name)} IN ({', '.join(self.v(v) for v in c.value)})"
        return f"{self.n(c.name)} {c.op} {self.v(c.value)}"

    def update(self, patch: Patch) -> str:
        sets = [f"{self.n(k)} = {self.v(v)}" for k, v in patch.set.items() if v is not None]
        removes = [self.n(k) for k, v in patch.set.items() if v is None]
        adds = [f"{self.n(k)} {self.v(v)}" for k, v in patch.add.items()]
        parts = zip(("SET ", "REMOVE ", "ADD "), (sets, removes, adds), strict=True)
        return " ".join(verb + ", ".join(names) for verb, names in parts if names)

    def params(self) -> dict[str, Any]:
        names = {"ExpressionAttributeNames": {p: a for a, p in self.names.items()}}
        values = {"ExpressionAttributeValues": self.values} if self.values else {}
        return {**names, **values} if self.names else values


class DynamoDocuments:
    atomic = True
    max_doc_bytes = 350_000  # after compression; keys and small fields fit in the rest of 400 KB
    max_transaction = 100

    def __init__(self, name: str, client: Any | None = None) -> None:
        self.name = name
        # Standard retry mode; connections for the threads of one process (lease heartbeats).
        self.client = client or lazy_client(
            "dynamodb", retries={"mode": "standard"}, max_pool_connections=32
        )

    def too_large(self, message: str) -> Exception:
        return ItemTooLargeError(message)

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One DynamoDB request, e.g. ``call("GetItem", Key=...)``, with errors translated."""
        try:
            with translated(operation):
                response: dict[str, Any] = getattr(self.client, xform_name(operation))(**params)
        except ConditionFailedError as exc:  # the stored items, as documents
            exc.item, exc.items = doc_of(exc.item), tuple(doc_of(i) for i in exc.items)
            raise
        return response

    def _item(self, doc: Doc) -> dict[str, Any]:
        size = doc_size(doc)
        if size > MAX_ITEM_BYTES:
            raise ItemTooLargeError(
                f"item {doc['pk']} / {doc['sk']} would be about {size:,} bytes; "
                f"DynamoDB items hold {MAX_ITEM_BYTES:,}"
            )
        return {name: attr(v) for name, v in doc.items() if v is not None}

    def _op(self, op: Write) -> tuple[str, dict[str, Any]]:
        """The request kind (``Put``, ``Update``, ``Delete``) and parameters of one write."""
        e = _Expr()
        params: dict[str, Any] = {"TableName": self.name}
        if isinstance(op, Put):
            kind, params["Item"] = "Put", self._item(op.doc)
        else:
            kind, params["Key"] = (
                ("Delete" if isinstance(op, Delete) else "Update"),
                item_key(op.key),
            )
        if isinstance(op, Patch):
            params["UpdateExpression"] = e.update(op)
        if op.when is not None:
            params["ConditionExpression"] = e.cond(op.when)
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return kind, {**params, **e.params()}

    def get(self, key: Key, *, consistent: bool = True) -> Doc | None:
        response = self.call(
            "GetItem", TableName=self.name, Key=item_key(key), ConsistentRead=consistent
        )
        return doc_of(response.get("Item"))

    def write(self, op: Write, returns: Literal["new", "old"] | None = None) -> Doc:
        kind, params = self._op(op)
        if returns is not None:
            params["ReturnValues"] = "ALL_NEW" if returns == "new" else "ALL_OLD"
        return doc_of(self.call(f"{kind}Item", **params).get("Attributes")) or {}

    def transact(self, ops: Sequence[Write]) -> None:
        self.call("TransactWriteItems", TransactItems=[dict([self._op(op)]) for op in ops])

    def query(self, query: Query) -> list[Doc]:
        """Every item matching (page after page), or the first ``limit`` in key order."""
        e, index = _Expr(), query.index
        condition = f"{e.n(index.pk)} = {e.v(query.partition)}"
        if query.prefix is not None:
            condition += f" AND begins_with({e.n(index.sk)}, {e.v(query.prefix)})"
        if query.upto is not None:
            condition += f" AND {e.n(index.sk)} <= {e.v(query.upto)}"
        # A filter is judged after DynamoDB's Limit: pages continue until enough pass it.
        where = {"FilterExpression": e.cond(query.where)} if query.where is not None else {}
        params: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": condition,
            "ScanIndexForward": query.forward,
            **where,
            **e.params(),
            **({"IndexName": index.name} if index.name else {"ConsistentRead": query.consistent}),
        }
        limit, items = query.limit, list[dict[str, Any]]()
        while limit is None or len(items) < limit:
            if limit is not None:
                params["Limit"] = limit - len(items)
            page = self.call("Query", **params)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        items = items[:limit] if limit is not None else items
        return [{name: plain(v) for name, v in i.items()} for i in items]

    def batch_write(self, puts: Sequence[Doc] = (), deletes: Sequence[Key] = ()) -> None:
        """Unconditional puts and deletes, 25 to a request, retrying the unprocessed."""
        requests = [{"PutRequest": {"Item": self._item(d)}} for d in puts]
        requests += [{"DeleteRequest": {"Key": item_key(k)}} for k in deletes]
        for start in range(0, len(requests), _BATCH_WRITE):
            pending = {self.name: requests[start : start + _BATCH_WRITE]}
            self._drain("BatchWriteItem", "RequestItems", "UnprocessedItems", pending)

    def batch_get(self, keys: Sequence[Key]) -> list[Doc]:
        """Consistent reads of ``keys`` (in no particular order; missing ones are absent)."""
        unique = [item_key(k) for k in dict.fromkeys(keys)]
        found: list[Doc] = []
        for start in range(0, len(unique), _BATCH_GET):
            chunk = {"Keys": unique[start : start + _BATCH_GET], "ConsistentRead": True}
            for response in self._drain(
                "BatchGetItem", "RequestItems", "UnprocessedKeys", {self.name: chunk}
            ):
                found += [
                    {n: plain(v) for n, v in i.items()} for i in response["Responses"][self.name]
                ]
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


__all__ = ["MAX_ITEM_BYTES", "DynamoDocuments", "attr", "doc_of", "item_key", "plain"]
