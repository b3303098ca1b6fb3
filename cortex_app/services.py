"""The console's long-lived objects (settings, database, runtime, lifecycle, reconciler,
scheduler, pulls, gateway), made once on first use in this process — never at import time."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

from cortex_app import secretbox
from cortex_app.db import engine_for, installation_id
from cortex_app.gateway.service import Gateway
from cortex_app.lifecycle import Lifecycle
from cortex_app.pulls import Pulls
from cortex_app.reconcile.leader import LeaderLease
from cortex_app.reconcile.loop import Reconciler
from cortex_app.reconcile.scheduler import ConsoleScheduler
from cortex_app.runtime.docker import DockerRuntime
from cortex_app.settings import Settings, load_settings


@dataclass
class Services:
    settings: Settings
    db: sa.Engine
    runtime: DockerRuntime
    lifecycle: Lifecycle
    reconciler: Reconciler
    scheduler: ConsoleScheduler
    pulls: Pulls
    gateway: Gateway


_services: Optional[Services] = None
_lock = threading.Lock()


def build(settings: Settings) -> Services:
    secretbox.protect_process()  # before any secret is in memory
    secretbox.use(settings)  # before anything reads a sealed column
    db = engine_for(settings.db_url)
    runtime = DockerRuntime(settings.docker_host, instance=installation_id(db))
    lifecycle = Lifecycle(db, runtime, settings)
    reconciler = Reconciler(lifecycle)
    # A console container that was removed (an upgrade: docker rm -f, then docker run) leaves its
    # lease to the next one at once: the engine says it no longer runs.
    scheduler = ConsoleScheduler(reconciler, LeaderLease(db, container_running=runtime.is_running), settings)
    return Services(settings, db, runtime, lifecycle, reconciler, scheduler, Pulls(db, runtime),
                    Gateway(db, lifecycle, reconciler, settings))


def get() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = build(load_settings())
        return _services
