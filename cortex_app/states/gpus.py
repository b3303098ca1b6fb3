"""GPUs page: NVML readings (runtime/gpu.py) and which models hold each GPU."""

from __future__ import annotations

import asyncio
from datetime import datetime

import reflex as rx

from cortex_app import crud
from cortex_app.models import ModelState
from cortex_app.runtime.gpu import GpuReading, read_gpus
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState


def card(g: GpuReading) -> dict:
    """One GPU's card on the page, from NVML here or a remote host's sampler."""
    return {"index": g.index, "name": g.name, "memory": f"{g.memory_used_mib:,} / {g.memory_total_mib:,} MiB",
            "memory_pct": g.memory_pct, "util": g.utilization_pct,
            "temp": "" if g.temperature_c is None else f"{g.temperature_c} °C",
            "power": "" if g.power_w is None else f"{g.power_w:g} W" + (
                f" / {g.power_limit_w:g} W" if g.power_limit_w else "")}


class GpuState(AdminState):
    available: bool = False
    checked: bool = False
    notice: str = ""
    driver: str = ""
    gpus: list[dict] = []
    history: list[dict] = []  # [{"t": "12:00:05", "gpu0": 87, "gpu1": 3}, ...] utilisation %
    remote_gpus: list[dict] = []  # other hosts' GPUs, read by their samplers (gpu_samplers.py)
    remote_notes: list[dict] = []  # {"host", "note"}: a host whose GPUs are not read, and why
    series: list[str] = []

    def _read(self):
        status = read_gpus()
        holders: dict[int, list[str]] = {}
        for m in crud.list_models(services().db):
            if m.device.value == "cuda" and m.state in (ModelState.LOADING, ModelState.RUNNING):
                for g in status.gpus:
                    if m.gpu_ids is None or g.index in m.gpu_ids:
                        holders.setdefault(g.index, []).append(m.name)
        samples = services().scheduler.gpu_history.samples
        return status, holders, samples, services().scheduler.samplers.hosts()

    @rx.event
    async def load(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        status, holders, samples, remote = await asyncio.to_thread(self._read)
        self.remote_gpus = [{**card(g), "host": h.name, "models": "—"} for h in remote for g in h.current]
        self.remote_notes = [{"host": h.name, "note": h.notice or "no readings yet"} for h in remote if not h.current]
        self.series = [f"gpu{i}" for i in sorted(samples)]
        points: dict[float, dict] = {}
        for index, series in samples.items():
            for p in series:
                points.setdefault(p["t"], {"t": datetime.fromtimestamp(p["t"]).strftime("%H:%M:%S")})[
                    f"gpu{index}"] = p["util"]
        self.history = [points[t] for t in sorted(points)]
        self.checked, self.available, self.notice, self.driver = True, status.available, status.notice, \
            status.driver_version
        self.gpus = [{**card(g), "host": "local", "models": ", ".join(holders.get(g.index, [])) or "—"}
                     for g in status.gpus]
