"""The OpenAPI 3.1 document, generated from a ``Router``'s route table so it cannot drift.

Path parameters come from each pattern, request bodies from ``request_model``'s JSON schema
(nested models hoisted into ``components.schemas``), security from each route's auth mode, and
every operation documents the one error shape as its default response.

Responses come from a table of ``Reply`` per route (nclav's, ``nclav.api.responses``, unless
another ``ApiDescription`` is given): every status a route answers on success, or with a body
other than the error shape, with its media type and schema. A route missing from the table
falls back to its own ``status`` and ``response_model``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from nclav.api.http import JSON_CONTENT_TYPE

if TYPE_CHECKING:
    # Imported where used: the response models are ~100 ms of pydantic classes that a cold
    # API function answering one request never needs (only GET /openapi.json does).
    from nclav.api.responses import ApiDescription, Reply
    from nclav.api.router import Route, Router

    ResponseTable = Mapping[tuple[str, str], Sequence[Reply]]

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string", "examples": ["not_found"]},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "details": {"type": "array", "items": {"$ref": "#/components/schemas/Issue"}},
            },
        }
    },
}
_ISSUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["path", "line", "field", "message"],
    "properties": {
        "path": {"type": "string"},
        "line": {"type": ["integer", "null"]},
        "field": {"type": "string"},
        "message": {"type": "string"},
    },
}
_STRING: dict[str, Any] = {"type": "string"}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "bearer": [{"bearerAuth": []}],
    "bearer_or_basic": [{"bearerAuth": []}, {"basicAuth": []}],
    "none": [],
}


def openapi(
    router: Router, title: str, version: str, described: ApiDescription | None = None
) -> dict[str, Any]:
    """An OpenAPI 3.1 document generated from the route table, so it cannot drift from it.

    ``described`` adds what the table does not hold (nclav's own, ``NCLAV_API``, unless told
    otherwise): each route's responses (see ``Reply``), the bodies of routes that read their
    body themselves (no ``request_model``), and the schemas of path and query parameters by
    name (a plain string when not listed). A route it does not describe is documented from
    its own ``status`` and ``response_model``."""
    if described is None:
        from nclav.api.responses import NCLAV_API

        described = NCLAV_API
    responses = described.responses
    raw_requests = described.raw_requests
    query_parameters = described.query_parameters
    path_parameters = described.path_parameters
    replies = {route: _replies(route, responses) for route in router.routes}
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for route in router.routes:
        if route.request_model is not None:
            models.append((route.request_model, "validation"))
        for reply in replies[route]:
            if _is_model(reply.body):
                models.append((reply.body, "serialization"))
    # One pass over all models hoists nested definitions into components and keeps names unique.
    refs, defs = models_json_schema(
        list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = {
        **defs.get("$defs", {}),
        "Error": _ERROR_SCHEMA,
        "Issue": _ISSUE_SCHEMA,
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    common_headers = _headers(described.common_headers, required=False)

    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in router.routes:
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": dict(path_parameters.get(name, _STRING)),
            }
            for name in route.params
        ] + [
            {"name": name, "in": "query", "schema": dict(query_parameters.get(name, _STRING))}
            for name in route.query
        ]
        documented: dict[str, Any] = {}
        for reply in replies[route]:
            doc: dict[str, Any] = {"description": reply.description or "success"}
            media: dict[str, Any] = {}
            if _is_model(reply.body):
                media["schema"] = refs[(reply.body, "serialization")]
            elif isinstance(reply.body, Mapping):
                media["schema"] = dict(reply.body)
            if reply.status == route.status and route.response_example is not None:
                media["example"] = route.response_example
            if media:
                doc["content"] = {reply.media_type: media}
            doc["headers"] = {**common_headers, **_headers(reply.headers, required=True)}
            earlier = documented.get(str(reply.status))
            if earlier is not None:  # the same status in another media type (Accept decides)
                doc["content"] = {**earlier.get("content", {}), **doc.get("content", {})}
                doc["headers"] = {**earlier["headers"], **doc["headers"]}
                doc["description"] = earlier["description"]
            documented[str(reply.status)] = doc
        operation_id = base_id = _operation_id(route)
        for n in itertools.count(2):  # operationIds must be unique within the document
            if operation_id not in operation_ids:
                break
            operation_id = f"{base_id}_{n}"
        operation_ids.add(operation_id)
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": route.summary,
            "security": _SECURITY[route.auth],
            "responses": {
                **documented,
                "default": {
                    "description": "error",
                    "headers": common_headers,
                    "content": {JSON_CONTENT_TYPE: {"schema": error_ref}},
                },
            },
        }
        if parameters:
            operation["parameters"] = parameters
        raw = raw_requests.get((route.method, route.pattern))
        if route.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    JSON_CONTENT_TYPE: {"schema": refs[(route.request_model, "validation")]}
                },
            }
        elif raw is not None:
            operation["requestBody"] = {
                "required": raw.required,
                "description": raw.description,
                "content": {raw.media_type: {"schema": dict(raw.schema)}},
            }
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "basicAuth": {"type": "http", "scheme": "basic"},
            },
        },
    }


def _replies(route: Route, table: ResponseTable) -> tuple[Reply, ...]:
    found = table.get((route.method, route.pattern))
    if found is not None:
        return tuple(found)
    from nclav.api.responses import Reply

    return (Reply(route.status, route.summary, route.response_model),)


def _is_model(body: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(body, type) and issubclass(body, BaseModel)


def _headers(headers: Mapping[str, Mapping[str, Any]], *, required: bool) -> dict[str, Any]:
    return {
        name: {"required": required, "schema": dict(schema)} for name, schema in headers.items()
    }


def _operation_id(route: Route) -> str:
    words = [text for is_param, text in route.segments if not is_param] or ["root"]
    by = [f"by_{text}" for is_param, text in route.segments if is_param]
    return re.sub(r"[^A-Za-z0-9_]+", "_", "_".join([route.method.lower(), *words, *by]))


__all__ = ["openapi"]
