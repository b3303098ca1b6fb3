"""The gateway's keys and usage over HTTP, for scripts (the Keys and Usage pages do the same):

  GET    /api/keys                 every inference key (never the key itself)
  POST   /api/keys                 {"name", "models": [...] or null, "expires_in_days", "rpm_limit"}:
                                   201 with the key, shown this once
  DELETE /api/keys/{id}            revoke: 204; the key stops working at once
  GET    /api/usage.csv?window=24h every gateway request in the window (24h, 7d, 30d) as CSV

Keys are an admin's business (an admin session or an admin token); the usage export is a
read. Inference keys themselves are never accepted here (nor API tokens on /v1)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cortex_app.api.deps import require_admin, require_read
from cortex_app.gateway import keys as keymod
from cortex_app.gateway.usage import WINDOWS, rows_csv
from cortex_app.models import InferenceKey
from cortex_app.services import get as services

router = APIRouter()


def key_json(k: InferenceKey) -> dict:
    return {"id": k.id, "name": k.name, "prefix": keymod.shown_prefix(k), "models": k.models,
            "rpm_limit": k.rpm_limit, "created_at": k.created_at.isoformat(),
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}


@router.get("/api/keys")
async def list_keys(user: str = Depends(require_admin)) -> dict:
    rows = await asyncio.to_thread(keymod.list_keys, services().db)
    return {"keys": [key_json(k) for k in rows]}


@router.post("/api/keys")
async def create_key(body: Any = Body(...), user: str = Depends(require_admin)) -> JSONResponse:
    if not isinstance(body, dict):
        return JSONResponse({"detail": "send a JSON object"}, status_code=422)
    svc = services()
    try:
        row, key = await asyncio.to_thread(keymod.create_key, svc.db, body.get("name", ""), body.get("models"),
                                           body.get("expires_in_days", 0), body.get("rpm_limit"))
    except keymod.KeyInvalid as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    await asyncio.to_thread(svc.gateway.refresh_keys)
    return JSONResponse({**key_json(row), "key": key}, status_code=201)


@router.delete("/api/keys/{key_id}")
async def revoke_key(key_id: int, user: str = Depends(require_admin)) -> Response:
    svc = services()
    if not await asyncio.to_thread(keymod.revoke_key, svc.db, key_id):
        return JSONResponse({"detail": f"no live key with id {key_id}"}, status_code=404)
    await asyncio.to_thread(svc.gateway.refresh_keys)
    return Response(status_code=204)


@router.get("/api/usage.csv")
async def usage_csv(window: str = "24h", user: str = Depends(require_read)) -> Response:
    if window not in WINDOWS:
        return JSONResponse({"detail": "window: use one of " + ", ".join(WINDOWS)}, status_code=422)
    db = services().db
    rows = rows_csv(db, window)

    async def body():
        while (part := await asyncio.to_thread(next, rows, None)) is not None:
            yield part

    return StreamingResponse(body(), media_type="text/csv", headers={
        "content-disposition": f'attachment; filename="cortex-usage-{window}.csv"'})
