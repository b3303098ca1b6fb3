"""Wiring only: the Reflex app, its pages, its HTTP routes and its lifespan (the scheduler)."""

from __future__ import annotations

import contextlib
import logging

import reflex as rx
from fastapi import FastAPI

from cortex_app.api.health import router as health_router
from cortex_app.pages import overview
from cortex_app.states.system import SystemState

api = FastAPI(title="Cortex API")
api.include_router(health_router)



@contextlib.asynccontextmanager
async def console_lifespan():
    """Reconcile before serving (the boot pass), run the jobs, and on a graceful stop apply
    the shutdown policy."""
    from cortex_app import services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    svc = services.get()
    await svc.scheduler.start()
    try:
        yield
    finally:
        await svc.scheduler.stop()


app = rx.App(api_transformer=api)
app.register_lifespan_task(console_lifespan)
app.add_page(overview, route="/", title="Cortex", on_load=SystemState.refresh)
