"""The landing page: the host (engine, GPUs with memory bars), models by state with what they
cost, what failed in the last day and why, and webhook delivery health. Followed every 2 s;
nothing here calls Docker or NVML on a tick (the scheduler's last readings are used)."""

from __future__ import annotations

import asyncio

import reflex as rx

from cortex_app import overview
from cortex_app.resources import FRESH_S, human_bytes
from cortex_app.runtime.docker import engine_info
from cortex_app.runtime.gpu import read_gpus
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState

TICK_MS = 2000


class OverviewState(AdminState):
    loaded: bool = False
    engine: dict = {}
    gpus: list[dict] = []
    gpu_notice: str = ""
    counts: list[dict] = []
    total: int = 0
    running_cost: str = ""
    failures: list[dict] = []
    deliveries: dict = {}

    def _read(self, with_engine: bool):
        svc = services()
        data = overview.read(svc.db)
        status = svc.scheduler.gpu_history.status or read_gpus()
        info = engine_info(svc.settings.docker_host) if with_engine else None
        report = svc.reconciler.last_report
        history = svc.scheduler.resources.history
        samples = [s for s in (history.latest(i, FRESH_S) for i in data["live"]) if s is not None]
        return data, status, info, (report.engine_error if report else ""), samples

    async def _refresh(self, with_engine: bool):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        data, status, info, engine_error, samples = await asyncio.to_thread(self._read, with_engine)
        if info is not None:  # asked once per visit; the ticks follow the reconciler's last word
            self.engine = {"host": info.host, "version": info.version or "", "reachable": info.reachable,
                           "error": info.error or ""}
        elif self.engine and bool(engine_error) == self.engine["reachable"]:
            self.engine = {**self.engine, "reachable": not engine_error, "error": engine_error or ""}
        self.gpus = [{"index": g.index, "name": g.name, "pct": round(g.memory_pct),
                      "memory": f"{g.memory_used_mib:,} of {g.memory_total_mib:,} MiB", "util": g.utilization_pct}
                     for g in status.gpus]
        self.gpu_notice = "" if status.available else status.notice
        self.counts, self.total = data["counts"], data["total"]
        cpu = sum(s.cpu_pct or 0 for s in samples)
        mem = sum(s.mem_bytes or 0 for s in samples)
        self.running_cost = f"{cpu:.0f} % CPU · {human_bytes(mem)}" if samples else ""
        self.failures = [{"at": e.created_at.strftime("%Y-%m-%d %H:%M:%S"), "model": e.model_name,
                          "model_id": e.model_id, "reason": e.reason} for e in data["failures"]]
        d = data["deliveries"]
        label, color = overview.delivery_verdict(d["endpoints"], d["pending"], d["failed"], d["retrying"])
        n = d["endpoints"]
        self.deliveries = {"label": label, "color": color,
                           "summary": f"{n} endpoint{'' if n == 1 else 's'} · {d['delivered']} delivered · "
                                      f"{d['retrying']} retrying · {d['failed']} gave up",
                           "last_ok": d["last_ok"].strftime("%Y-%m-%d %H:%M:%S") if d["last_ok"] else "never"}
        self.loaded = True

    @rx.event
    async def load(self):
        return await self._refresh(with_engine=True)

    @rx.event
    async def tick(self, _=None):
        return await self._refresh(with_engine=False)
