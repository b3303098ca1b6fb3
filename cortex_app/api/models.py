"""GET /api/models: every model with its state and health, for scripts (admins only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from cortex_app import crud
from cortex_app.api.deps import require_admin
from cortex_app.services import get as services

router = APIRouter()


@router.get("/api/models")
async def list_models(user: str = Depends(require_admin)) -> dict:
    rows = await asyncio.to_thread(crud.list_models, services().db)
    return {"models": [{"id": m.id, "name": m.name, "served_name": m.served_name, "engine": m.engine.value,
                        "state": m.state.value, "state_reason": m.state_reason, "health": m.health.value,
                        "host_port": m.host_port} for m in rows]}
