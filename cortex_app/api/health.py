"""GET /api/health: is the console up, does the Docker Engine answer. No secrets, no auth:
it is what a load balancer or `curl` asks."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from cortex_app import __version__
from cortex_app.runtime.docker import engine_info
from cortex_app.settings import load_settings

router = APIRouter()


@router.get("/api/health")
async def health() -> dict:
    settings = load_settings()
    info = await asyncio.to_thread(engine_info, settings.docker_host)
    return {
        "status": "ok",
        "version": __version__,
        "database": settings.db_kind,
        "engine": {"reachable": info.reachable, "host": info.host, "version": info.version,
                   "error": info.error},
    }
