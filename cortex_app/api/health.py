"""GET /api/health: is the console up, does the Docker Engine answer. No auth: it is what a
load balancer, the image's HEALTHCHECK or `curl` asks, so it says only that. A signed-in
caller (session or API token) also gets the versions, the engine's address and its error."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from cortex_app import __version__
from cortex_app.api.deps import caller
from cortex_app.runtime.docker import engine_info
from cortex_app.services import get as services

router = APIRouter()


@router.get("/api/health")
async def health(request: Request) -> dict:
    settings = services().settings
    info = await asyncio.to_thread(engine_info, settings.docker_host)
    if await caller(request) is None:
        return {"status": "ok", "engine": {"reachable": info.reachable}}
    return {
        "status": "ok",
        "version": __version__,
        "database": settings.db_kind,
        "engine": {"reachable": info.reachable, "host": info.host, "version": info.version,
                   "error": info.error},
    }
