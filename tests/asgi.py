"""The ASGI scope of one HTTP request, for calling the app without an HTTP client (the
benchmarks and the tests that need a hand-made receive use it)."""

from __future__ import annotations

from typing import Any


def http_scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("localhost", 80),
        "state": {},
    }
