"""State of the console's own health: is the Docker Engine there, which database, which version."""

from __future__ import annotations

import asyncio

import reflex as rx

from cortex_app import __version__
from cortex_app.runtime.docker import engine_info
from cortex_app.settings import load_settings


class SystemState(rx.State):
    checked: bool = False
    engine_reachable: bool = False
    engine_host: str = ""
    engine_version: str = ""
    engine_error: str = ""
    db_kind: str = ""
    version: str = __version__

    @rx.event
    async def refresh(self):
        settings = load_settings()
        # The SDK blocks (up to its timeout when the engine is gone): keep it off the event loop.
        info = await asyncio.to_thread(engine_info, settings.docker_host)
        self.engine_host = info.host
        self.engine_reachable = info.reachable
        self.engine_version = info.version or ""
        self.engine_error = info.error or ""
        self.db_kind = settings.db_kind
        self.checked = True
