"""GPUs page: NVML readings (runtime/gpu.py) and which models hold each GPU."""

from __future__ import annotations

import asyncio

import reflex as rx

from cortex_app import crud
from cortex_app.models import ModelState
from cortex_app.runtime.gpu import read_gpus
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState


class GpuState(AdminState):
    available: bool = False
    checked: bool = False
    notice: str = ""
    driver: str = ""
    gpus: list[dict] = []

    def _read(self):
        status = read_gpus()
        holders: dict[int, list[str]] = {}
        for m in crud.list_models(services().db):
            if m.device.value == "cuda" and m.state in (ModelState.LOADING, ModelState.RUNNING):
                for g in status.gpus:
                    if m.gpu_ids is None or g.index in m.gpu_ids:
                        holders.setdefault(g.index, []).append(m.name)
        return status, holders

    @rx.event
    async def load(self):
        if await self.admin() is None:
            return
        status, holders = await asyncio.to_thread(self._read)
        self.checked, self.available, self.notice, self.driver = True, status.available, status.notice, \
            status.driver_version
        self.gpus = [{"index": g.index, "name": g.name, "memory": f"{g.memory_used_mib} / {g.memory_total_mib} MiB",
                      "memory_pct": g.memory_pct, "util": g.utilization_pct,
                      "temp": "" if g.temperature_c is None else f"{g.temperature_c} °C",
                      "power": "" if g.power_w is None else f"{g.power_w:g} W" + (
                          f" / {g.power_limit_w:g} W" if g.power_limit_w else ""),
                      "models": ", ".join(holders.get(g.index, [])) or "—"} for g in status.gpus]
