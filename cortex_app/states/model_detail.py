"""One model: state and reason, health history, endpoint and a curl example, how to call it
through the gateway, the event timeline, and its logs (live container, or the lines kept when
it failed)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Optional

import reflex as rx
from sqlmodel import Session, func, select

from cortex_app import crud, hosts
from cortex_app.engines import memory
from cortex_app.models import Host, ModelEvent, ModelState, utcnow
from cortex_app.resources import Sample
from cortex_app.runtime.docker import DockerRuntimeError
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState
from cortex_app.states.models import model_id_in, model_row

LOG_LINES = 300
EVENTS_PER_PAGE = 20


def latency_points(history: list, gap_s: float) -> list[dict]:
    """The probe-latency chart's points: a failed probe is a gap, and so is the time between
    two runs (samples further apart than `gap_s`), so a line never joins one run to the next."""
    points: list[dict] = []
    last = None
    for t, ms in history:
        if last is not None and t - last > gap_s:
            points.append({"t": "", "ms": None})
        points.append({"t": datetime.fromtimestamp(t).strftime("%H:%M:%S"), "ms": ms})
        last = t
    return points


def memory_record(estimate_mib: Optional[float], used_mib: Optional[float]) -> str:
    """The last start's estimate beside the most the model held since ("" before either is known):
    the estimate's error, there to see."""
    if used_mib is None:
        return f"estimated {estimate_mib:,.0f} MiB at start; nothing measured yet" if estimate_mib else ""
    held = f"held at most {used_mib:,.0f} MiB"
    if not estimate_mib:
        return held
    return f"{held}; estimated {estimate_mib:,.0f} MiB at start ({(estimate_mib - used_mib) / used_mib:+.0%})"


def silent(host: Host, away: set[int]) -> bool:
    """Whether another host is known not to answer (its last check, or this console's
    last pass there): a page then says so at once rather than ask it."""
    return host.endpoint is not None and (host.reachable is False or host.id in away)


def logs_note(state: ModelState, has_container: bool, kept: bool) -> str:
    """What the logs box shows: the live container's; the lines kept at the failure only while
    the model is failed (after a clean stop they would belong to an older run)."""
    if has_container:
        return ""
    if state == ModelState.FAILED:
        return "lines kept when it failed" if kept else "no lines were kept when it failed"
    return "no container: logs show while it runs"


class ModelDetailState(AdminState):
    found: bool = True
    row: dict = {}
    image: str = ""
    source: str = ""
    startup_timeout_s: int = 0
    loading_elapsed_s: int = 0
    events: list[dict] = []
    event_page: int = 0  # 0 = the newest EVENTS_PER_PAGE
    event_total: int = 0
    health_points: list[dict] = []
    resource_points: list[dict] = []  # the sampler's history: CPU %, memory and GPU memory MiB, tokens/s
    has_tokens: bool = False
    has_gpu_mem: bool = False
    logs: list[str] = []
    log_query: str = ""
    follow: bool = True
    logs_note: str = ""
    gateway: dict = {}  # gateway_examples()
    memory_estimate: str = ""  # engines/memory.py: what llama.cpp will allocate, or why there is no figure
    memory_record: str = ""  # memory_record(): the last start's estimate beside what the model held

    @rx.var
    def shown_logs(self) -> str:
        q = self.log_query.strip().lower()
        return "\n".join(line for line in self.logs if not q or q in line.lower())

    @rx.var
    def curl_example(self) -> str:
        endpoint = self.row.get("endpoint", "")
        if not endpoint:
            return ""
        return (f"curl {endpoint}/chat/completions -H 'Content-Type: application/json' -d "
                f"'{{\"model\": \"{self.row.get('served_name', '')}\", \"messages\": [{{\"role\": \"user\", "
                f"\"content\": \"Hello\"}}], \"max_tokens\": 32}}'")

    def _model_id(self) -> int:
        return model_id_in(self.router.url.path)

    def _read(self, model_id: int, with_logs: bool, page: int):
        svc = services()
        m = crud.get_model(svc.db, model_id)
        if m is None:
            return None
        with Session(svc.db) as s:
            total = s.exec(select(func.count()).select_from(ModelEvent).where(ModelEvent.model_id == model_id)).one()
            events = s.exec(select(ModelEvent).where(ModelEvent.model_id == model_id)
                            .order_by(ModelEvent.id.desc()).offset(page * EVENTS_PER_PAGE)
                            .limit(EVENTS_PER_PAGE)).all()
        try:
            host = hosts.get_host(svc.db, m.host_id)
        except hosts.HostNotFound:
            host = None
        logs, note = None, ""
        if with_logs and host is not None and silent(host, svc.reconciler.unreachable):
            logs, note = [], f"host {host.name} does not answer: its logs show once it does"
        elif with_logs:
            try:
                if m.container_id or m.state == ModelState.FAILED:
                    logs = svc.lifecycle.logs(model_id, LOG_LINES).splitlines()
                else:
                    logs = []
                note = logs_note(m.state, bool(m.container_id), bool(logs))
            except DockerRuntimeError as exc:
                logs, note = [], str(exc)
        try:
            estimate = memory.estimate_model(m, svc.settings.models_dir, svc.settings.hf_cache_dir).summary()
        except ValueError as exc:  # GgufUnreadable, or a file outside what it reads
            estimate = f"none ({exc})"
        row = model_row(m, svc.lifecycle.is_stale(m), utcnow(), host,
                        svc.lifecycle.base_url_of(m.engine, m.container_id, m.host_port, m.host_id),
                        svc.settings.public_url)
        return (m, events, total, logs, note, row,
                svc.scheduler.resources.history.series(model_id), svc.settings.probe_interval_s, estimate)

    async def _refresh(self, with_logs: bool):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        got = await asyncio.to_thread(self._read, self._model_id(), with_logs, self.event_page)
        if got is None:
            self.found = False
            return
        m, events, self.event_total, logs, note, row, series, probe_interval_s, estimate = got
        if estimate != self.memory_estimate:
            self.memory_estimate = estimate
        record = memory_record(m.memory_estimate_mib, m.memory_used_mib)
        if record != self.memory_record:
            self.memory_record = record
        last_page = max(0, -(-self.event_total // EVENTS_PER_PAGE) - 1)
        if self.event_page > last_page:  # events went (the model was deleted and made anew)
            self.event_page = last_page
        now = utcnow()
        self.found = True
        self.row = row
        self.image, self.source, self.startup_timeout_s = m.image, m.source, m.startup_timeout_s
        examples = gateway_examples(services().settings.public_url, m.served_name, m.embeddings, m.request_defaults)
        if examples != self.gateway:  # set only when it changes: a tick sends no unchanged examples
            self.gateway = examples
        self.loading_elapsed_s = int((now - m.started_at).total_seconds()) if (
            m.state == ModelState.LOADING and m.started_at) else 0
        self.events = [{"at": _time(e.created_at), "from": e.from_state.value if e.from_state else "",
                        "to": e.to_state.value, "kind": e.kind.value, "reason": e.reason, "actor": e.actor,
                        "failed": e.to_state == ModelState.FAILED and e.kind.value == "state"}
                       for e in events]
        # Probes come every probe interval; three missed in a row mean the model was not running.
        self.health_points = latency_points((m.probe_history or [])[-60:], gap_s=3 * probe_interval_s + 1)
        points = resource_points(series)
        if points != self.resource_points:
            self.resource_points = points
            self.has_tokens = any(p["tokens_s"] is not None for p in points)
            self.has_gpu_mem = any(p["gpu_mib"] is not None for p in points)
        if logs is not None:
            self.logs, self.logs_note = logs, note

    @rx.var
    def event_pages(self) -> str:
        pages = max(1, -(-self.event_total // EVENTS_PER_PAGE))
        return f"page {self.event_page + 1} of {pages} · {self.event_total} events"

    @rx.var
    def has_older(self) -> bool:
        return (self.event_page + 1) * EVENTS_PER_PAGE < self.event_total

    @rx.event
    async def load(self):
        self.log_query = ""
        self.event_page = 0
        return await self._refresh(with_logs=True)

    @rx.event
    async def older_events(self):
        if self.has_older:
            self.event_page += 1
        return await self._refresh(with_logs=False)

    @rx.event
    async def newer_events(self):
        self.event_page = max(0, self.event_page - 1)
        return await self._refresh(with_logs=False)

    @rx.event
    async def tick(self, _=None):
        return await self._refresh(with_logs=self.follow and self.row.get("state") in ("loading", "running"))

    @rx.event
    def set_log_query(self, value: str):
        self.log_query = value

    @rx.event
    def set_follow(self, value: bool):
        self.follow = value


def gateway_examples(public_url: str, served_name: str, embeddings: bool, defaults: dict) -> dict:
    """How a client calls the model through the gateway (the console's /v1, an inference key in
    $CORTEX_KEY): with curl and with the openai Python client; and the defaults the gateway
    adds to a request that does not set them."""
    base = public_url.rstrip("/") + "/v1"
    name = json.dumps(served_name)
    if embeddings:
        path, body = "embeddings", {"model": served_name, "input": "Hello"}
        call = (f'result = client.embeddings.create(model={name}, input="Hello")\n'
                "print(len(result.data[0].embedding))")
    else:
        path, body = "chat/completions", {"model": served_name, "messages": [{"role": "user", "content": "Hello"}]}
        call = (f"reply = client.chat.completions.create(\n    model={name},\n"
                '    messages=[{"role": "user", "content": "Hello"}],\n)\n'
                "print(reply.choices[0].message.content)")
    curl = (f"curl {base}/{path} \\\n  -H \"Authorization: Bearer $CORTEX_KEY\" \\\n"
            f"  -H \"Content-Type: application/json\" \\\n  -d '{json.dumps(body)}'")
    python = (f"import os\n\nfrom openai import OpenAI\n\n"
              f"client = OpenAI(\n    base_url={json.dumps(base)},\n    api_key=os.environ[\"CORTEX_KEY\"],\n)\n{call}")
    return {"base": base, "endpoint": f"{base}/{path}", "curl": curl, "python": python,
            "defaults": json.dumps(defaults, indent=2) if defaults else ""}


def resource_points(series: list[Sample]) -> list[dict]:
    """The chart's points: one per sample, in the page's units."""
    mib = 1024 * 1024
    return [{"t": datetime.fromtimestamp(x.at).strftime("%H:%M:%S"),
             "cpu": None if x.cpu_pct is None else round(x.cpu_pct, 1),
             "mem_mib": None if x.mem_bytes is None else round(x.mem_bytes / mib, 1),
             "gpu_mib": None if x.gpu_mem_bytes is None else round(x.gpu_mem_bytes / mib),
             "tokens_s": None if x.tokens_s is None else round(x.tokens_s, 2)} for x in series]


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")
