"""Wiring only: the Reflex app, its pages, its HTTP routes and its lifespan (the scheduler)."""

from __future__ import annotations

import contextlib
import logging

import reflex as rx
from fastapi import FastAPI

from cortex_app import pages
from cortex_app.api.gateway import router as gateway_router
from cortex_app.api.health import router as health_router
from cortex_app.api.hosts import router as hosts_router
from cortex_app.api.limits import BodyLimit
from cortex_app.api.models import router as models_router
from cortex_app.api.monitoring import router as monitoring_router
from cortex_app.api.session import router as session_router
from cortex_app.gateway.service import GatewayASGI
from cortex_app.states.auth import AuthState
from cortex_app.states.gpus import GpuState
from cortex_app.states.hosts import HostsState
from cortex_app.states.images import ImagesState
from cortex_app.states.keys import KeysState
from cortex_app.states.model_detail import ModelDetailState
from cortex_app.states.model_form import ModelFormState
from cortex_app.states.models import ModelsState
from cortex_app.states.overview import OverviewState
from cortex_app.states.settings import SettingsState
from cortex_app.states.system import SystemState
from cortex_app.states.usage import UsageState

# No public schema or docs: the routes are in the README, and /docs would map them for anyone.
api = FastAPI(title="Cortex API", docs_url=None, redoc_url=None, openapi_url=None)
api.add_middleware(BodyLimit)
api.include_router(gateway_router)
api.include_router(health_router)
api.include_router(hosts_router)
api.include_router(models_router)
api.include_router(monitoring_router)
api.include_router(session_router)


@contextlib.asynccontextmanager
async def console_lifespan():
    """Reconcile before serving (the boot pass), run the jobs, and on a graceful stop apply
    the shutdown policy."""
    from cortex_app import services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe, likewise
    svc = services.get()
    await svc.scheduler.start()
    await svc.gateway.start()
    try:
        yield
    finally:
        await svc.gateway.stop()
        await svc.scheduler.stop()


app = rx.App(api_transformer=api, stylesheets=["/layout.css"])
app.register_lifespan_task(console_lifespan)

guard = AuthState.require_admin  # every signed-in page checks the session first
app.add_page(pages.login, route="/login", title="Sign in · Cortex", on_load=AuthState.open_login)
app.add_page(pages.setup, route="/setup", title="Set up · Cortex", on_load=AuthState.open_setup)
app.add_page(pages.overview, route="/", title="Overview · Cortex", on_load=[guard, OverviewState.load])
app.add_page(pages.models, route="/models", title="Models · Cortex", on_load=[guard, ModelsState.load, ImagesState.load_pulls])
app.add_page(pages.model_form, route="/models/new", title="New model · Cortex",
             on_load=[guard, ModelFormState.open_new, ImagesState.load_pulls])
app.add_page(pages.model_detail, route="/models/[model_id]", title="Model · Cortex",
             on_load=[guard, ModelDetailState.load])
app.add_page(pages.model_form, route="/models/[model_id]/edit", title="Edit model · Cortex",
             on_load=[guard, ModelFormState.open_edit, ImagesState.load_pulls])
app.add_page(pages.keys, route="/keys", title="Keys · Cortex", on_load=[guard, KeysState.load])
app.add_page(pages.usage, route="/usage", title="Usage · Cortex", on_load=[guard, UsageState.load])
app.add_page(pages.gpus, route="/gpus", title="GPUs · Cortex", on_load=[guard, GpuState.load])
app.add_page(pages.hosts, route="/hosts", title="Hosts · Cortex", on_load=[guard, HostsState.load])
app.add_page(pages.system, route="/system", title="System · Cortex", on_load=[guard, SystemState.refresh, ImagesState.load_pulls])
app.add_page(pages.settings, route="/settings", title="Settings · Cortex", on_load=[guard, SettingsState.load])


def served():
    """What the server runs (serve.py): Reflex's ASGI app with the gateway (/v1) in front of all
    of it. A gateway request pays none of the console's middleware (CORS, Reflex's context,
    routing), which cost about as much CPU as the gateway's own work; and it gets no CORS
    headers, so no page of another origin can read an answer."""
    return GatewayASGI(app())
