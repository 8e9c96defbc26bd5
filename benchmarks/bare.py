"""The yardstick: a bare FastAPI endpoint that takes the same request body (parsed into a dict,
as FastAPI does by default) and answers a small JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI

app = FastAPI()


@app.post("/cds-services/{service_id}")
async def hook(service_id: str, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    return {"cards": [], "service": service_id, "keys": len(body)}
