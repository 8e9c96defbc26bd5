"""JSON in and out with orjson: several times faster than the standard library on big prefetch."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from .errors import BadRequest


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def parse_object(body: bytes, what: str = "request body") -> dict[str, Any]:
    """Parse a JSON object or raise a 400 that says what is wrong with it."""
    if not body:
        raise BadRequest(f"The {what} is empty; a JSON object is required.", code="malformed_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The {what} is not valid JSON: {exc}", code="malformed_json") from None
    if not isinstance(data, dict):
        raise BadRequest(
            f"The {what} must be a JSON object, not {type(data).__name__}.", code="malformed_json"
        )
    return data
