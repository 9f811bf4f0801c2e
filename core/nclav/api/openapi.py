"""The OpenAPI 3.1 document, generated from a ``Router``'s route table so it cannot drift.

Path parameters come from each pattern, request bodies from ``request_model``'s JSON schema
(nested models hoisted into ``components.schemas``), security from each route's auth mode, and
every operation documents the one error shape as its default response.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

from pydantic.json_schema import JsonSchemaMode, models_json_schema

from nclav.api.http import JSON_CONTENT_TYPE

if TYPE_CHECKING:
    from pydantic import BaseModel

    from nclav.api.router import Route, Router

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
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "bearer": [{"bearerAuth": []}],
    "bearer_or_basic": [{"bearerAuth": []}, {"basicAuth": []}],
    "none": [],
}


def openapi(router: Router, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document generated from the route table, so it cannot drift from it."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for route in router.routes:
        if route.request_model is not None:
            models.append((route.request_model, "validation"))
        if route.response_model is not None:
            models.append((route.response_model, "serialization"))
    # One pass over all models hoists nested definitions into components and keeps names unique.
    refs, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = {
        **defs.get("$defs", {}),
        "Error": _ERROR_SCHEMA,
        "Issue": _ISSUE_SCHEMA,
    }
    error_ref = {"$ref": "#/components/schemas/Error"}

    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in router.routes:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.params
        ] + [{"name": name, "in": "query", "schema": {"type": "string"}} for name in route.query]
        success: dict[str, Any] = {"description": route.summary or "success"}
        media: dict[str, Any] = {}
        if route.response_model is not None:
            media["schema"] = refs[(route.response_model, "serialization")]
        if route.response_example is not None:
            media["example"] = route.response_example
        if media:
            success["content"] = {JSON_CONTENT_TYPE: media}
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
                str(route.status): success,
                "default": {
                    "description": "error",
                    "content": {JSON_CONTENT_TYPE: {"schema": error_ref}},
                },
            },
        }
        if parameters:
            operation["parameters"] = parameters
        if route.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    JSON_CONTENT_TYPE: {"schema": refs[(route.request_model, "validation")]}
                },
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


def _operation_id(route: Route) -> str:
    words = [text for is_param, text in route.segments if not is_param] or ["root"]
    by = [f"by_{text}" for is_param, text in route.segments if is_param]
    return re.sub(r"[^A-Za-z0-9_]+", "_", "_".join([route.method.lower(), *words, *by]))


__all__ = ["openapi"]
