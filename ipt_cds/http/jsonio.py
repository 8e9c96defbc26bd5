"""JSON in and out: bounded reads, orjson parsing, and the shape limits a body must keep."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ipt_cds.protocol.errors import BadRequest, ServiceError, json_kind


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
            f"The {what} must be a JSON object, not {json_kind(data)}.", code="malformed_json"
        )
    return data


_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
# Depth does not care which kind of bracket: make them all square.
_SQUARE = bytes.maketrans(b"{}", b"[]")


def check_depth(body: bytes, max_depth: int) -> None:
    """Refuse a (valid JSON) body nested deeper than ``max_depth`` levels.

    On the bytes, at C speed (~0.15 ms for 60 KB, where walking the parsed body took 1.6 ms):
    drop escaped backslashes and quotes, then everything but brackets and quotes, then the
    strings. Each pass of the loop then removes the innermost bracket pairs, so a shape not
    empty after ``max_depth`` passes is too deep.
    """
    if b"\\" in body:  # one byte: a memchr, where a two-byte search costs as much as a replace
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Most strings hold no bracket and leave '""'. Dropping a '""' drops such a string, or
    # joins two strings that touch: either way quotes still alternate open, close, so the
    # strings that remain (those with brackets inside) are the odd pieces between quotes.
    shape = body.translate(None, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    if b'"' in shape:
        shape = b"".join(shape.split(b'"')[::2])
    shape = shape.translate(_SQUARE)
    for _ in range(max_depth):
        if not shape:
            return
        shape = shape.replace(b"[]", b"")
    if shape:
        raise BadRequest(
            f"The request body is nested deeper than {max_depth} levels.", code="too_deep"
        )


def check_entries(bundles: list[Any], max_entries: int) -> None:
    """Refuse Bundles (prefetch values, draftOrders) with more than ``max_entries`` entries."""
    for bundle in bundles:
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        if isinstance(entries, list) and len(entries) > max_entries:
            raise PayloadTooLarge(
                f"A Bundle in the request has {len(entries)} entries; the limit is {max_entries}.",
                code="too_many_entries",
            )
