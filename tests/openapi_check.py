"""Check a live response against the server's own OpenAPI document (``GET /openapi.json``).

For routes whose success answers need more than the schemathesis suite's server can give (the
git source's routes need a real git server): the test that drives them calls
``assert_conforms`` on each answer, so every documented operation is checked somewhere.
"""

from __future__ import annotations

from typing import Any

import jsonschema


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def assert_conforms(
    doc: dict[str, Any], method: str, pattern: str, status: int, body: Any, media: str
) -> None:
    """``body`` (parsed JSON) is what the document promises for ``status`` of the operation."""
    responses = doc["paths"][pattern][method.lower()]["responses"]
    assert str(status) in responses, (method, pattern, status, sorted(responses))
    content = responses[str(status)].get("content", {})
    assert media in content, (method, pattern, status, media, sorted(content))
    ref = _pointer("paths", pattern, method.lower(), "responses", str(status), "content", media)
    # The document itself is the schema resource, so its components resolve.
    schema = {**doc, "$ref": ref + "/schema"}
    jsonschema.Draft202012Validator(schema).validate(body)


__all__ = ["assert_conforms"]
