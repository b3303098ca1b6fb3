"""Wiring only: the Reflex app, its pages and its HTTP routes."""

from __future__ import annotations

import reflex as rx
from fastapi import FastAPI

from cortex_app.api.health import router as health_router
from cortex_app.pages import overview
from cortex_app.states.system import SystemState

api = FastAPI(title="Cortex API")
api.include_router(health_router)

app = rx.App(api_transformer=api)
app.add_page(overview, route="/", title="Cortex", on_load=SystemState.refresh)
