"""JSON in and out: bounded reads, orjson parsing, and the shape limits a body must keep."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import BadRequest, ServiceError


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


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


def check_shape(data: Any, max_depth: int, max_entries: int) -> None:
    """Refuse bodies nested deeper than ``max_depth`` or with a Bundle of too many entries.

    Iterative, so that the check itself cannot exhaust the stack.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(
                f"The request body is nested deeper than {max_depth} levels.", code="too_deep"
            )
        if isinstance(node, dict):
            entries = node.get("entry")
            if isinstance(entries, list) and len(entries) > max_entries:
                raise PayloadTooLarge(
                    f"A Bundle in the request has {len(entries)} entries; the limit is "
                    f"{max_entries}.",
                    code="too_many_entries",
                )
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
