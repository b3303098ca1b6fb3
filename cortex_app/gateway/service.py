"""The gateway's request path: /v1/* as a plain ASGI handler in front of the console's routes.

Per request it reads only memory: the model table and the keys live in a snapshot that a
task refreshes every second (and at once after a key changes in this process), so a request
costs no database round trip. The flow: key -> key allows the name asked -> rate limit ->
model route (routing.choose: the model, or one replica of an alias) -> the model's defaults ->
the engine, the answer passed through (a stream chunk by chunk) -> one usage record and the
metrics.

A client that goes away cancels its request: the connection to the engine is dropped, and
llama-server stops generating."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import weakref
from datetime import timedelta
from typing import Collection, Optional

import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app.gateway import keys as keymod
from cortex_app.gateway.routing import ENDPOINTS, HOST_UNREACHABLE, GatewayError, Route, Snapshot, choose, error_body, prepare, \
    is_usage_only, usage_of
from cortex_app.gateway.upstream import MAX_EVENT_BYTES, Upstream, UpstreamError
from cortex_app.gateway.usage import FLUSH_INTERVAL_S, GatewayMetrics, UsageMeter, prune
from cortex_app.models import Host, Model, utcnow
from cortex_app.reconcile.jobs import JobStatus, job_failed, job_succeeded

log = logging.getLogger(__name__)

REFRESH_S = 1.0
STALE_S = 10.0  # a snapshot older than this is not routed on
REPORT_EVERY_S = 1.0
BENCH_S = 5.0  # a replica that refused a connection gets no new requests for this long (while others can)
PRUNE_EVERY_S = 3600.0  # usage records past the retention go within the hour
MAX_BODY_BYTES = 16 * 1024 * 1024  # a long prompt or a batch of inputs to embed
SUSPECT_EVERY_S = 5.0
REFUSED = frozenset({401, 403, 429})  # refusals: counted by status in metrics, never written as usage
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def _tokens_in(body: bytes) -> tuple[int, int]:
    """(prompt, completion) tokens from a whole JSON answer, without parsing it all (an
    embeddings answer is mostly numbers). Escaped quotes inside strings cannot match."""
    p, c = _PROMPT.search(body), _COMPLETION.search(body)
    return (int(p.group(1)) if p else 0), (int(c.group(1)) if c else 0)


class _Exchange:
    """One request's figures, for the meter."""

    __slots__ = ("t0", "key", "model", "endpoint", "stream", "status", "prompt", "completion", "ttft", "complete",
                 "refused")

    def __init__(self, t0: float) -> None:
        self.t0, self.key, self.model, self.endpoint = t0, None, "", ""
        self.stream, self.status, self.prompt, self.completion, self.ttft = False, 0, 0, 0, None
        self.complete = False  # the client has the whole answer (what follows is the closing of it)
        self.refused = False  # the gateway itself refused the key (401, 403, 429): never an engine's answer


class Gateway:
    def __init__(self, db: sa.Engine, lifecycle, reconciler, settings) -> None:
        self.db, self.lifecycle, self.reconciler, self.settings = db, lifecycle, reconciler, settings
        self.snapshot = Snapshot()
        self._inflight: dict[int, int] = {}  # model id -> requests it is answering now
        self._last: dict[int, int] = {}  # model id -> when it was last picked for an alias (a sequence number)
        self._picks = 0
        self._suspected: dict[int, float] = {}  # model id -> when its silence last had a pass look (monotonic)
        self._benched: dict[int, float] = {}  # model id -> monotonic time until which it is passed over
        self.keys: dict[str, keymod.KeyView] = {}
        self.limiter = keymod.RateLimiter()
        self.metrics = GatewayMetrics()
        self.meter = UsageMeter(db, settings.gateway_metering)
        self._upstreams: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Upstream]" = weakref.WeakKeyDictionary()
        self._stopping: Optional[asyncio.Event] = None
        self._tasks: list[asyncio.Task] = []
        self._reported: dict[int, float] = {}  # model id -> when its last failure was reported
        self._reports: set[asyncio.Task] = set()
        self._lock = threading.Lock()  # a refresh and a key change in this process: the newer read wins
        self.loaded_at: Optional[float] = None  # monotonic time of the last good refresh

    # --- the snapshot ---------------------------------------------------------------------

    def _read_routes(self) -> Snapshot:
        with Session(self.db) as s:
            rows = s.exec(select(Model.id, Model.name, Model.served_name, Model.state, Model.state_reason,
                                 Model.health, Model.engine, Model.container_id, Model.host_port,
                                 Model.request_defaults, Model.alias, Model.host_id)).all()
            # Where other hosts' models answer (a console that does not lead never reconciles).
            host_rows = list(s.exec(select(Host)).all())
            self.lifecycle.note_hosts(host_rows)
        # The hosts check found them silent, or this console's last pass there did.
        away = {h.id for h in host_rows if h.reachable is False} | self.reconciler.unreachable
        base = self.lifecycle.base_url_of
        return Snapshot.of([Route(mid, name, served, state.value, reason,
                                  HOST_UNREACHABLE if host in away else health.value,
                                  base(engine, cid, port, host) if state.value == "running" else None, cid,
                                  defaults or {}, alias)
                            for mid, name, served, state, reason, health, engine, cid, port, defaults, alias, host
                            in rows])

    def refresh(self) -> None:
        """Read the model table and the keys into the snapshot (a thread; two small SELECTs)."""
        with self._lock:
            self.snapshot = self._read_routes()
            self.keys = keymod.key_views(self.db)
            self.loaded_at = time.monotonic()

    def refresh_keys(self) -> None:
        """After a key was made or revoked here: it counts from the next request on. Under the
        lock, so a periodic refresh that read the keys before the change cannot write them
        back after it."""
        with self._lock:
            self.keys = keymod.key_views(self.db)

    def prune_usage(self) -> int:
        """Delete the usage records older than CORTEX_USAGE_RETENTION_DAYS (a thread: at start,
        then hourly; a stop ends it after the current batch); the number deleted."""
        stopping = self._stopping
        return prune(self.db, utcnow() - timedelta(days=self.settings.usage_retention_days),
                     stop=stopping.is_set if stopping is not None else (lambda: False))

    async def _every(self, job: JobStatus, period_s: float, work) -> None:
        """Run `work` every `period_s` until the gateway stops. Failures are logged as episodes,
        as the scheduler's jobs are (reconcile/jobs.py): when one begins, when it changes, when
        it ends; a database down for an hour is not a line a second. What failed is kept: the
        last snapshot goes on serving (10 s at most), the records wait for the next flush."""
        while not self._stopping.is_set():
            try:
                await work()
                line = job_succeeded(job, time.time())
                if line:
                    log.info("gateway: %s", line)
            except Exception as exc:  # noqa: BLE001 - the loop never dies
                line = job_failed(job, str(exc) or type(exc).__name__, time.time())
                if line:
                    log.warning("gateway: %s", line)
            try:
                await asyncio.wait_for(self._stopping.wait(), period_s)
            except asyncio.TimeoutError:
                pass

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        await asyncio.to_thread(self.refresh)
        self._tasks = [
            asyncio.create_task(self._every(JobStatus("gateway snapshot"), REFRESH_S,
                                            lambda: asyncio.to_thread(self.refresh))),
            asyncio.create_task(self._every(JobStatus("usage flush"), FLUSH_INTERVAL_S, self.meter.flush)),
            asyncio.create_task(self._every(JobStatus("usage retention"), PRUNE_EVERY_S,
                                            lambda: asyncio.to_thread(self.prune_usage)))]

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.meter.flush()
        except Exception as exc:  # noqa: BLE001
            log.warning("gateway: %d usage records not written at stop: %s", self.meter.pending, exc)
        up = self._upstreams.pop(asyncio.get_running_loop(), None)
        if up is not None:
            up.close()

    def _upstream(self) -> Upstream:
        loop = asyncio.get_running_loop()
        up = self._upstreams.get(loop)
        if up is None:
            up = self._upstreams[loop] = Upstream(tls=self.lifecycle.ingresses.tls)
        return up

    # --- ASGI -----------------------------------------------------------------------------

    async def handle(self, scope, receive, send) -> None:
        ex = _Exchange(time.perf_counter())
        try:
            await self._handle(scope, receive, send, ex)
        finally:
            if ex.refused:  # counted, never a usage row: a refused key writes nothing
                self.metrics.refuse(ex.status)
            elif ex.model:
                self._account(ex)

    def _account(self, ex: _Exchange) -> None:
        latency = time.perf_counter() - ex.t0
        ttft = None if ex.ttft is None else ex.ttft - ex.t0
        self.metrics.observe(ex.model, ex.status, ex.prompt, ex.completion, latency, ttft)
        key = ex.key
        self.meter.record(key.id if key else None, key.name if key else "", ex.model, ex.endpoint, ex.stream,
                          ex.status, ex.prompt, ex.completion, latency * 1000, None if ttft is None else ttft * 1000)

    async def _refuse(self, send, err: GatewayError, ex: _Exchange) -> None:
        ex.status = err.status
        await send({"type": "http.response.start", "status": err.status, "headers": err.headers()})
        await send({"type": "http.response.body", "body": err.body()})

    def _key(self, scope) -> keymod.KeyView:
        presented = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                v = value.decode("latin-1")
                if v[:7].lower() == "bearer ":
                    presented = v[7:].strip()
                break
        if not presented:
            raise GatewayError(401, "send an inference key as `Authorization: Bearer sk-cortex-...` (an admin "
                               "makes one on the Keys page)", "authentication_error", "missing_key")
        lookup = keymod.lookup_of(presented)
        if lookup is None:
            what = ("an admin API token is not accepted on /v1" if presented.startswith("ctx_")
                    else "this is not an inference key")
            raise GatewayError(401, f"{what}: use an inference key (sk-cortex-...) from the Keys page",
                               "authentication_error", "invalid_api_key")
        view = self.keys.get(lookup)
        problem = keymod.verify(view, presented, time.time())
        if problem:
            raise GatewayError(401, problem, "authentication_error", "invalid_api_key")
        return view

    async def _handle(self, scope, receive, send, ex: _Exchange) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        try:
            if self.loaded_at is None or time.monotonic() - self.loaded_at > STALE_S:
                # Routing on an old view could send a key to a model that is no longer where
                # the view says (a port given to another model meanwhile).
                raise GatewayError(503, "the gateway cannot read the model table right now (database "
                                   "unreachable?); try again shortly" if self.loaded_at else
                                   "the gateway is starting; try again shortly", "service_unavailable",
                                   retry_after=1)
            endpoint = ENDPOINTS.get(path)
            if path == "/v1/models" and method == "GET":
                view = self._key(scope)
                return await self._list(send, view)
            if endpoint is None:
                raise GatewayError(404, f"no route {method} {scope['path']} (the gateway serves GET /v1/models, "
                                   "POST /v1/chat/completions, /v1/completions and /v1/embeddings)",
                                   code="unknown_route")
            if method != "POST":
                raise GatewayError(405, f"{scope['path']} takes POST", code="method_not_allowed")
            ex.key = view = self._key(scope)
            # The key's limit before its body is read: a key over it costs no read and no parse.
            wait = self.limiter.take(view.id, view.rpm_limit, time.monotonic())
            if wait:
                raise GatewayError(429, f"this key's limit of {view.rpm_limit} requests per minute is reached",
                                   "rate_limit_error", "rate_limit_exceeded", retry_after=wait)
            raw = await self._body(receive)
            if raw is None:
                return
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                raise GatewayError(400, "the request body is not JSON") from None
            if not isinstance(body, dict):
                raise GatewayError(400, "the request body must be a JSON object")
            asked, ex.endpoint = body.get("model"), endpoint
            if isinstance(asked, str) and asked:
                # The key decides first: a key limited to some names learns nothing of the others
                # (whether they exist, their state, their replicas).
                if asked in self.snapshot.routes or asked in self.snapshot.aliases:
                    ex.model = asked  # a refusal is metered under the name asked (never an unknown one)
                if not keymod.allows(view, asked):
                    raise GatewayError(403, f"this key may not use the model `{asked}`",
                                       "permission_error", "model_not_allowed", param="model")
            route = self._choose(asked)
            ex.model = route.served_name
            prepared = prepare(body, endpoint, route.defaults)
        except GatewayError as err:
            ex.refused = err.status in REFUSED
            return await self._refuse(send, err, ex)
        ex.stream = prepared.stream
        await self._forward(scope, receive, send, route, path, prepared.body, asked if route.alias == asked else None,
                            prepared.client_wants_usage, ex)

    async def _body(self, receive) -> Optional[bytes]:
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise GatewayError(413, f"the request body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB")
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _list(self, send, view: keymod.KeyView) -> None:
        now = int(time.time())
        data = [{"id": name, "object": "model", "created": now, "owned_by": "cortex"}
                for name in self.snapshot.listed() if keymod.allows(view, name)]
        body = json.dumps({"object": "list", "data": data}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})

    async def _forward(self, scope, receive, send, route: Route, path: str, body: dict, alias: Optional[str],
                       client_wants_usage: bool, ex: _Exchange) -> None:
        """Run the exchange while a watcher listens to the client: if it goes away first, the
        exchange is cancelled where it waits (its engine connection dropped on the way out).
        One extra task per request, not two: the exchange runs in this one."""
        me = asyncio.current_task()
        state = {"finished": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            # A client that leaves once it has the whole answer (the openai client closes a
            # stream at `data: [DONE]`, before its closing chunk) did not cut it short.
            if not state["finished"] and not ex.complete:
                state["left"] = True
                me.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._exchange(send, route, path, body, alias, client_wants_usage, ex)
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            me.uncancel()
            ex.status = 499  # nginx's "client closed request": it did not get the whole answer
        finally:
            state["finished"] = True
            watcher.cancel()

    # --- replicas (models sharing an alias) --------------------------------------------------

    def _choose(self, asked, failed: Collection[int] = ()) -> Route:
        """The model a request goes to (routing.choose), never one of `failed` (replicas this
        request could not reach). Replicas that refused a connection in the last BENCH_S are
        passed over while another replica can take the request."""
        now = time.monotonic()
        benched = {mid for mid, until in self._benched.items() if until > now}
        try:
            route = choose(self.snapshot, asked, self._inflight, self._last, benched.union(failed))
        except GatewayError:
            if not benched:
                raise
            route = choose(self.snapshot, asked, self._inflight, self._last, failed)
        if route.alias is not None and route.alias == asked:
            self._picks += 1
            self._last[route.model_id] = self._picks
        return route

    def _hold(self, route: Route, n: int) -> None:
        left = self._inflight.get(route.model_id, 0) + n
        if left > 0:
            self._inflight[route.model_id] = left
        else:
            self._inflight.pop(route.model_id, None)

    # --- to the engine and back ------------------------------------------------------------

    @staticmethod
    async def _send(up: Upstream, route: Route, path: str, body: dict, alias: Optional[str], stream: bool):
        """The request to one model's server (its served name in `model` when the client named an
        alias: vLLM checks it). Refused or reset before anything came back: once more, on a fresh
        connection (a server that just closed its idle ones, a restart in progress)."""
        data = json.dumps({**body, "model": route.served_name} if alias else body).encode()
        try:
            return await up.request(route.base_url, "POST", path, data, stream=stream)
        except UpstreamError as exc:
            if not exc.connect or exc.silent:  # nothing answered at all: not at once again
                raise
            return await up.request(route.base_url, "POST", path, data, stream=stream)

    async def _exchange(self, send, route: Route, path: str, body: dict, alias: Optional[str],
                        client_wants_usage: bool, ex: _Exchange) -> None:
        up = self._upstream()
        timeout = self.settings.gateway_timeout_s
        resp = None
        failed: list[int] = []
        self._hold(route, 1)
        try:
            try:
                try:
                    async with asyncio.timeout(timeout):
                        while resp is None:
                            try:
                                resp = await self._send(up, route, path, body, alias, ex.stream)
                            except UpstreamError as exc:
                                if not exc.connect:
                                    raise
                                self._report(route, str(exc), silent=exc.silent)
                                failed.append(route.model_id)
                                self._benched[route.model_id] = time.monotonic() + BENCH_S
                                if alias is None:
                                    raise
                                try:
                                    other = self._choose(alias, failed)
                                except GatewayError:
                                    raise exc from None  # no other replica: the refusal is the answer
                                # The request never reached this replica: another one of the alias gets it.
                                self._hold(route, -1)
                                route = other
                                self._hold(route, 1)
                                ex.model = route.served_name
                # Said under the name the client used: an alias's replicas stay its own business.
                except UpstreamError as exc:
                    if exc.silent:  # its host may have gone silent: a pass looks now
                        self._suspect(route)
                    raise GatewayError(502, f"the model `{alias or route.served_name}` did not answer: {exc}",
                                       "upstream_error", "upstream_unreachable") from None
                except TimeoutError:
                    raise GatewayError(504, f"the model `{alias or route.served_name}` did not answer within "
                                       f"{timeout:g} s", "timeout", "upstream_timeout") from None
            except GatewayError as err:
                return await self._refuse(send, err, ex)
            ex.status = resp.status
            wrong = _wrong_type(resp, ex.stream)
            if wrong:
                resp.close()
                return await self._refuse(send, GatewayError(502, wrong, "upstream_error", "upstream_broken"), ex)
            try:
                if ex.stream and resp.status == 200:
                    await self._stream(send, resp, client_wants_usage, ex, timeout)
                else:
                    await self._plain(send, resp, ex, timeout)
            finally:
                resp.close()
        finally:
            self._hold(route, -1)

    async def _plain(self, send, resp, ex: _Exchange, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                data = await resp.read()
        except (UpstreamError, TimeoutError) as exc:
            err = (GatewayError(504, "the model did not finish its answer in time", "timeout", "upstream_timeout")
                   if isinstance(exc, TimeoutError) else
                   GatewayError(502, f"the model broke off its answer: {exc}", "upstream_error", "upstream_broken"))
            return await self._refuse(send, err, ex)
        if resp.status == 200:
            ex.prompt, ex.completion = _tokens_in(data)
        ctype = resp.header(b"content-type") or b"application/json"
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
        ex.complete = True

    async def _stream(self, send, resp, client_wants_usage: bool, ex: _Exchange, timeout: float) -> None:
        """SSE passed through as it comes. Only a chunk that mentions `usage` is looked into:
        its figures are metered, and the usage-only chunk the gateway asked for is dropped
        unless the client asked for it too."""
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        loop = asyncio.get_running_loop()
        held = b""  # an event split across chunks waits for its end
        moved, slack = loop.time(), min(1.0, timeout / 10)
        try:
            async with asyncio.timeout(timeout) as deadline:
                async for chunk in resp.chunks(MAX_EVENT_BYTES):
                    if ex.ttft is None:
                        ex.ttft = time.perf_counter()
                    if held:
                        chunk, held = held + chunk, b""
                    if not chunk.endswith(b"\n\n"):  # an event split across chunks: its end waits
                        end = chunk.rfind(b"\n\n") + 2
                        if end < 2:
                            held = chunk
                            if len(held) > MAX_EVENT_BYTES:
                                raise UpstreamError(f"an event of its stream is over {MAX_EVENT_BYTES >> 20} MiB")
                            continue  # a part of an event moves no deadline: a trickle cannot hold it open
                        chunk, held = chunk[:end], chunk[end:]
                    # The deadline is the time since the last whole event, less at most a tenth of
                    # it: moving a timer per event costs more than the rest of the event's work.
                    now = loop.time()
                    if now - moved > slack:
                        deadline.reschedule(now + timeout)
                        moved = now
                    if b'"usage"' in chunk:
                        chunk = self._meter_events(chunk, client_wants_usage, ex)
                        if not chunk:
                            continue
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if chunk.endswith(b"data: [DONE]\n\n"):  # OpenAI's end of a stream: the client has it all
                        ex.complete = True
            if held:
                await send({"type": "http.response.body", "body": held, "more_body": True})
            ex.complete = True
        except (UpstreamError, TimeoutError) as exc:
            ex.status = 504 if isinstance(exc, TimeoutError) else 502
            message = ("the model sent nothing more in time" if isinstance(exc, TimeoutError)
                       else f"the model's stream broke off: {exc}")
            event = error_body(message, "timeout" if ex.status == 504 else "upstream_error")
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
        try:
            await send({"type": "http.response.body", "body": b""})
        except (OSError, RuntimeError):  # granian: "ASGI transport closed"
            if not ex.complete:
                raise

    @staticmethod
    def _meter_events(data: bytes, client_wants_usage: bool, ex: _Exchange) -> bytes:
        kept = []
        for event in data.split(b"\n\n"):
            if not event:
                continue
            if event.startswith(b"data: ") and b'"usage"' in event:
                try:
                    payload = json.loads(event[6:])
                except ValueError:
                    payload = None
                tokens = usage_of(payload)
                if tokens:
                    ex.prompt, ex.completion = tokens
                if not client_wants_usage and is_usage_only(payload):
                    continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def _suspect(self, route: Route) -> None:
        """Its engine said nothing at all: a reconcile pass looks at its host now, at most once
        per SUSPECT_EVERY_S per model (an engine whose port alone is silent, its host answering,
        must not keep passes running back to back)."""
        now = time.monotonic()
        if now - self._suspected.get(route.model_id, -SUSPECT_EVERY_S) >= SUSPECT_EVERY_S:
            self._suspected[route.model_id] = now
            self.reconciler.look_again()

    def _report(self, route: Route, error: str, silent: bool = False) -> None:
        """An engine that refused the connection twice counts as a failed health probe: at most
        one a second per model (a burst of requests must not make a burst of probes). One that
        said nothing at all may be on a host gone silent: a reconcile pass looks at once (and
        finds it silent by its deadline; the gateway then refuses its models at once)."""
        if silent:
            self._suspect(route)
        now = time.monotonic()
        if now - self._reported.get(route.model_id, -REPORT_EVERY_S) < REPORT_EVERY_S:
            return
        self._reported[route.model_id] = now
        task = asyncio.get_running_loop().create_task(
            self.reconciler.note_failed_probe(route.model_id, route.container_id, f"gateway: {error}", seen_at=now))
        self._reports.add(task)  # held until done: a task nobody references may be collected
        task.add_done_callback(self._reports.discard)


def _wrong_type(resp, stream: bool) -> str:
    """Why an engine's answer of 200 is not what the route answers (an SSE stream, or JSON), or
    "": the client is never handed HTML or a download where it asked for a completion."""
    if resp.status != 200:
        return ""
    want = b"text/event-stream" if stream else b"application/json"
    got = (resp.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if got == want:
        return ""
    return (f"the model's server answered with content type {got.decode('latin-1')[:60] or 'none'}, "
            f"not {want.decode()}")


class GatewayASGI:
    """Wraps the console's whole ASGI app (cortex_app.served): /v1/* goes to the gateway,
    everything else (pages, /api, the lifespan) on as before."""

    def __init__(self, app) -> None:
        self.app = app
        self._gateway = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            gw = self._gateway
            if gw is None:
                from cortex_app.services import get as services

                gw = self._gateway = services().gateway
            return await gw.handle(scope, receive, send)
        return await self.app(scope, receive, send)
