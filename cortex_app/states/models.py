"""The models table: rows refreshed by a 0.5 s client tick (only re-sent when something
changed), filters, and the row actions (Start, Stop, Apply, Delete) as background events
so Docker's work never blocks the page."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Optional

import reflex as rx

from cortex_app import crud
from cortex_app.images import canonical
from cortex_app.lifecycle import DoesNotFit, Refused
from cortex_app.runtime.docker import DockerRuntimeError
from cortex_app.hosts import list_hosts
from cortex_app.models import Host, Model, ModelState, utcnow
from cortex_app.resources import FRESH_S, Sample
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState

S = ModelState


def model_id_in(path: str) -> int:
    """The model id in a page path such as /models/5 or /models/5/edit (0 if none)."""
    m = re.match(r"^/models/(\d+)(?:/|$)", path or "")
    return int(m.group(1)) if m else 0


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def usage_line(sample: Optional[Sample]) -> dict:
    """A running model's cost, compact, for its row ("" where not known yet)."""
    v = sample.view() if sample else {"cpu": "", "mem": "", "gpu_mem": "", "tokens_s": "", "in_flight": ""}
    first = " · ".join(x for x in (v["cpu"] and v["cpu"] + " CPU", v["mem"],
                                   v["gpu_mem"] and v["gpu_mem"] + " GPU") if x)
    second = " · ".join(x for x in (v["tokens_s"], v["in_flight"] and v["in_flight"] + " in flight") if x)
    return {"figures": first, "engine": second}


def model_row(m: Model, stale: bool, now: datetime, host: Optional[Host] = None, base_url: Optional[str] = None,
              gateway: str = "") -> dict:
    """What the table shows of a model: plain strings and flags, decided here, not in the page.
    `host`: the model's host (its name, and whether the hosts' check last found it answering);
    `base_url`: where another host's model answers; `gateway`: the console's own address, where
    a model behind another host's ingress is reached (only the console reaches the ingress)."""
    devices = "cpu" if m.device.value == "cpu" else "cuda: " + (",".join(map(str, m.gpu_ids)) if m.gpu_ids else "all")
    active = m.state in (S.LOADING, S.RUNNING)
    host_down = host is not None and host.reachable is False
    health = m.health.value if m.state == S.RUNNING else ""
    if active and host_down:
        health = "host unreachable"  # its state is kept; nothing is known of it until the host answers
    if m.host_id != 1 and active:
        if base_url and base_url.startswith("https:"):
            endpoint = f"{gateway}/v1" if gateway else ""
        else:
            endpoint = f"{base_url}/v1" if base_url else ""
    else:
        endpoint = f"http://127.0.0.1:{m.host_port}/v1" if active and m.host_port else ""
    return {
        "id": m.id, "name": m.name, "served_name": m.served_name, "engine": m.engine.value, "devices": devices,
        "host": (host.name if host is not None else f"host {m.host_id}") + (" (auto)" if m.auto_host else ""),
        "state": m.state.value, "reason": m.state_reason, "health": health,
        "endpoint": endpoint,
        "uptime": human_duration((now - m.ready_at).total_seconds()) if m.state == S.RUNNING and m.ready_at else "",
        "stale": stale,
        # Only the actions that apply: a failed model is started again or deleted, not stopped.
        "can_start": m.state in (S.STOPPED, S.FAILED),
        "can_stop": m.state in (S.LOADING, S.RUNNING),
        "can_delete": m.state in (S.STOPPED, S.FAILED),
    }


def action_toast(verb: str, model: Optional[Model], error: str) -> rx.event.EventSpec:
    """What an admin is told after Start, Stop, Apply or Delete: where the model is now, or why not."""
    if error:
        return rx.toast.error(f"{verb.replace('_', ' ')} refused: {error}")
    if model is None:  # deleted
        return rx.toast.success("model deleted")
    if model.state == S.FAILED:
        return rx.toast.error(f"{model.name} failed: {model.state_reason}")
    said = {S.LOADING: "started; loading", S.STOPPED: "stopped", S.RUNNING: "running"}.get(model.state,
                                                                                           model.state.value)
    return rx.toast.success(f"{model.name} {said}")


class ModelsState(AdminState):
    rows: list[dict] = []
    query: str = ""
    state_filter: str = "all"
    message: str = ""
    engine_error: str = ""  # the reconciler's last word on the Docker Engine, if it is gone
    loaded: bool = False
    usage: dict[str, dict] = {}  # model id -> usage_line() of each loading or running model
    pull_offer: dict = {}  # {model_id, name, image} while Start offers to pull a missing image
    fit_offer: dict = {}  # {model_id, why} while Start, refused by the fit check, offers to start anyway
    _signature: str = ""

    @rx.var
    def visible(self) -> list[dict]:
        q = self.query.strip().lower()
        return [r for r in self.rows
                if (not q or q in r["name"].lower() or q in r["served_name"].lower())
                and (self.state_filter == "all" or r["state"] == self.state_filter)]

    def _read(self) -> tuple[str, list[dict], str, dict]:
        """Runs in a worker thread: reads only, the handler sets the vars."""
        svc = services()
        report = svc.reconciler.last_report
        engine_error = (report.engine_error or "") if report else ""
        models = crud.list_models(svc.db)  # ordered by name: rows never jump on state changes
        hosts = {h.id: h for h in list_hosts(svc.db)}
        signature = f"{len(models)}#" + "|".join(
            f"{m.id}:{m.state.value}:{m.health.value}:{m.updated_at.isoformat()}" for m in models) + "#" + "".join(
            f"{h.id}:{h.reachable}" for h in hosts.values())
        now = utcnow()
        history = svc.scheduler.resources.history  # in memory, kept by the sampler
        usage = {str(m.id): usage_line(history.latest(m.id, FRESH_S)) for m in models if m.state in (S.LOADING, S.RUNNING)}
        lc = svc.lifecycle
        return signature, [model_row(m, lc.is_stale(m), now, hosts.get(m.host_id),
                                     lc.base_url_of(m.engine, m.container_id, m.host_port, m.host_id),
                                     svc.settings.public_url)
                           for m in models], engine_error, usage

    @rx.event
    async def load(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        signature, rows, self.engine_error, self.usage = await asyncio.to_thread(self._read)
        self._signature, self.rows, self.loaded = signature, rows, True

    @rx.event
    async def tick(self, _=None):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        signature, rows, engine_error, usage = await asyncio.to_thread(self._read)
        if engine_error != self.engine_error:
            self.engine_error = engine_error
        if usage != self.usage:  # apart from the rows: figures move every second, rows seldom
            self.usage = usage
        if signature != self._signature or any(r["uptime"] for r in rows):
            self._signature, self.rows = signature, rows

    @rx.event
    def set_query(self, value: str):
        self.query = value

    @rx.event
    def set_state_filter(self, value: str):
        self.state_filter = value

    async def _act(self, verb: str, model_id: int):
        async with self:
            user = await self._admin()
        if user is None:
            async with self:
                self.message = "your session ended; sign in again"
            yield rx.redirect("/login")
            return
        lc = services().lifecycle
        if verb == "start":
            offer = await asyncio.to_thread(self._missing_image, model_id)
            if offer:  # Start on an image the engine lacks offers the pull; it starts nothing itself
                async with self:
                    self.pull_offer = offer
                return
        actor = f"admin:{user} (browser)"  # how it came (the API records `(api)` or `token:<name>`)
        # No waiting for readiness here: the reconciler moves loading -> running (its loading
        # watcher runs a pass as soon as /health answers), so no thread waits out a load.
        calls = {"start": lambda: lc.start(model_id, actor=actor),
                 "start_anyway": lambda: lc.start(model_id, actor=actor, override_fit=True),
                 "apply_anyway": lambda: lc.apply(model_id, actor=actor, override_fit=True),
                 "stop": lambda: lc.stop(model_id, actor=actor),
                 "apply": lambda: lc.apply(model_id, actor=actor),
                 "delete": lambda: lc.delete(model_id, actor=actor)}
        try:
            model = await asyncio.to_thread(calls[verb])
            text = ""
        except DoesNotFit as exc:  # the numbers, and the choice to start it anyway (this once)
            async with self:
                self.fit_offer = {"model_id": model_id, "why": str(exc), "verb": verb}
            return
        except (Refused, LookupError, DockerRuntimeError) as exc:
            model, text = None, str(exc)
        async with self:
            self.message = text
            self._signature = "stale"  # force the next tick to send the rows
        yield action_toast(verb, model, text)

    @staticmethod
    def _missing_image(model_id: int) -> dict:
        """The pull to offer when the model's image is not on the engine (else {}). An engine
        that cannot say is left to Start, which reports it; so is a model on another host
        (the Images page pulls on this one: Start says to pull it there)."""
        svc = services()
        model = crud.get_model(svc.db, model_id)
        if model is None or model.host_id != 1:
            return {}
        try:
            if svc.runtime.image_present(model.image):
                return {}
        except DockerRuntimeError:
            return {}
        return {"model_id": model.id, "name": model.name, "image": canonical(model.image)}

    @rx.var
    def offering_pull(self) -> bool:
        return bool(self.pull_offer)

    @rx.event
    def pull_offer_open(self, is_open: bool):
        if not is_open:
            self.pull_offer = {}

    @rx.event(background=True)
    async def start(self, model_id: int):
        async for out in self._act("start", model_id):
            yield out

    @rx.var
    def offering_fit(self) -> bool:
        return bool(self.fit_offer)

    @rx.event
    def fit_offer_open(self, is_open: bool):
        if not is_open:
            self.fit_offer = {}

    @rx.event(background=True)
    async def start_anyway(self, model_id: int):
        """Start (or Apply) overriding the fit check, once: the admin saw the numbers."""
        async with self:
            verb = "apply_anyway" if self.fit_offer.get("verb") == "apply" else "start_anyway"
            self.fit_offer = {}
        async for out in self._act(verb, model_id):
            yield out

    @rx.event(background=True)
    async def stop(self, model_id: int):
        async for out in self._act("stop", model_id):
            yield out

    @rx.event(background=True)
    async def apply(self, model_id: int):
        async for out in self._act("apply", model_id):
            yield out

    @rx.event(background=True)
    async def delete(self, model_id: int):
        async for out in self._act("delete", model_id):
            yield out
