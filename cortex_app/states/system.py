"""System page: the Docker Engine, how models are wired to the console, the engine images
present, the database, the scheduler's jobs (each one's last error), and the console's
journal (containers removed or left alone, job failure episodes)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import reflex as rx

from cortex_app import __version__, crud, journal
from cortex_app.images import canonical, is_present
from cortex_app.reconcile.leader import describe_holder, lease_holder
from cortex_app.runtime.docker import DockerRuntimeError, engine_info
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState
from cortex_app.settings import load_settings


class SystemState(AdminState):
    checked: bool = False
    engine_reachable: bool = False
    engine_host: str = ""
    engine_version: str = ""
    engine_error: str = ""
    db_kind: str = ""
    version: str = __version__
    images: list[dict] = []
    leader: str = ""
    last_pass: str = ""
    wiring: str = ""
    jobs: list[dict] = []
    events: list[dict] = []

    @staticmethod
    def _at(ts) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""

    def _jobs(self, scheduler) -> list[dict]:
        rows = []
        for st in scheduler.jobs.values():
            if st.failing:
                status = f"failing since {self._at(st.failing_since)} ({st.failures}×)"
            else:
                status = "ok" if st.last_ok_at else "not run yet"
            rows.append({"job": st.name, "id": f"job-{st.name}", "status": status, "failing": st.failing,
                         "last_error": st.last_error or "—",
                         "last_error_at": self._at(st.last_error_at) or "—", "episodes": str(st.episodes)})
        return rows

    def _read(self):
        settings = load_settings()
        info = engine_info(settings.docker_host)
        images: list[dict] = []
        leader, last_pass, wiring, jobs, events = "", "", "", [], []
        try:
            svc = services()
            jobs = self._jobs(svc.scheduler)
            events = [{"at": e.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"), "kind": e.kind, "subject": e.subject,
                       "message": e.message} for e in journal.recent(svc.db)]
            tags = set(svc.runtime.image_tags()) if info.reachable else set()
            wanted: dict[str, list[str]] = {}
            for m in crud.list_models(svc.db):
                wanted.setdefault(canonical(m.image), []).append(m.name)
            for image in sorted({canonical(i) for i in set(wanted) | {settings.llamacpp_image, settings.vllm_image}}):
                images.append({"image": image, "present": is_present(image, tags),
                               "models": ", ".join(wanted.get(image, [])) or "—"})
            if info.reachable:
                placement = svc.lifecycle.try_placement()
                wiring = placement.describe() if placement else f"cannot start models: {svc.lifecycle.placement_problem}"
            lease = svc.scheduler.lease
            if lease.is_leader:
                leader = f"this console: {describe_holder(lease.holder)}"
            else:
                other = lease_holder(svc.db)  # SQLite keeps the holder in a row; PostgreSQL holds a lock
                leader = ("another console: " + describe_holder(other) if other else "another console process") + \
                    f" (this one, {describe_holder(lease.holder)}, stands by)"
            report = svc.reconciler.last_report
            if report is not None:
                at = datetime.fromtimestamp(report.started_at, timezone.utc).strftime("%H:%M:%S UTC")
                last_pass = f"{at}, {report.duration_s * 1000:.0f} ms, {len(report.actions)} actions" + (
                    f" (engine: {report.engine_error})" if report.engine_error else "")
        except DockerRuntimeError:
            pass
        return settings, info, images, leader, last_pass, wiring, jobs, events

    @rx.event
    async def refresh(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        # The SDK blocks (up to its timeout when the engine is gone): keep it off the event loop.
        settings, info, images, leader, last_pass, wiring, self.jobs, self.events = await asyncio.to_thread(self._read)
        self.engine_host = info.host
        self.engine_reachable = info.reachable
        self.engine_version = info.version or ""
        self.engine_error = info.error or ""
        self.db_kind = settings.db_kind
        self.images, self.leader, self.last_pass = images, leader, last_pass or "not yet"
        self.wiring = wiring or "unknown until the engine answers"
        self.checked = True
