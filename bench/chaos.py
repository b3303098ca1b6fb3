"""The chaos harness: a real console (started as `make up` starts it), two real engines (the
console's own and another host's, behind TLS in a network namespace: tests/hostbed.py) and
a mix of real models on both, under a seeded random schedule of overlapping faults, with the
table and the containers of both engines checked against each other continuously
(bench/chaos_invariants.py).

The schedule (a pure function of the seed) mixes admin actions over the HTTP API, fired
concurrently and in conflict (start, stop, edit + apply, delete, create), with the world's
doings: docker kill / stop / rm -f / start of an exited container / pause / rename, forged
containers with Cortex's labels (half of them ignore SIGTERM), the engine restarted or gone
for 5-20 s, the console SIGTERMed or SIGKILLed (also just after a Start) and started again
with make up, the webhook receiver down for a while; and the other host's faults: its network
cut (packets dropped) for 3-12 s, its engine gone for 3-12 s, its engine restarted.

It prints the faults injected by kind, every invariant violation (the seed and step that
replay it, and what the harness saw of its subject around it: its row and containers, snapshot
by snapshot, and the console's log lines naming it), and the time to truth per fault kind: from the fault's end (the docker call
returned, the engine or the console back) until rows and containers agree again.

Usage: DOCKER_HOST=... python bench/chaos.py --minutes 30 [--seed N ...] [--seeds N] [--cover] [--one-host]
  (`make chaos` sets the engine up; make test runs a short form: tests/integration/test_chaos.py)
Exit status 1 when any invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402
from standardwebhooks import Webhook  # noqa: E402

from bench.chaos_invariants import (Ctr, Delivery, Event, Found, Row, Snapshot, Tracker, agrees,  # noqa: E402
                                    around, disagreement, timeline_violations, webhook_violations)
from bench.common import BUSYBOX_IMAGE, INGRESS_IMAGE, LLAMA_IMAGE, VLLM_IMAGE, pct  # noqa: E402
from tests import engines  # noqa: E402
from tests.console import Console, ConsoleFailed, free_port, launch  # noqa: E402
from tests.hostbed import RemoteHost  # noqa: E402

ADMIN, PASSWORD = "chaos", "chaos-harness-pass-1"
FORGED = "chaos.forged"
SAMPLE_EVERY_S = 0.05
SLOW_TRUTH_S = 2.0  # with --verbose, a fault that took longer to resolve says what was still wrong
RECENT_S = 6.0  # the snapshots kept to show what was seen around a violation
CONSOLE_LOG_BEFORE_S = 3.0  # and the console's log lines about its subject from this long before

# What a step can be, and how often (relative weights).
WEIGHTS = {
    # an admin, over the HTTP API
    "start": 24, "stop": 6, "apply": 5, "create": 2, "delete": 2, "conflict": 5,
    # the world, through the engine
    "docker_kill": 9, "docker_stop": 5, "docker_rm": 4, "docker_start_exited": 4, "docker_pause": 4,
    "forge": 7, "rename": 3,
    # the big ones
    "engine_restart": 1.2, "engine_outage": 0.8, "console_sigterm": 0.7, "console_sigkill": 0.7,
    "console_sigkill_mid_start": 0.7, "receiver_down": 1.5,
    # the other host: its network cut, its engine gone, its engine restarted
    "host_cut": 0.8, "host_outage": 0.6, "host_restart": 0.6,
}
HOST_KINDS = {"host_cut", "host_outage", "host_restart"}
FAR = "far"  # the other host's name in the console
REMOTE_SLOTS = ("llama-b", "extra-1")  # models that belong to it
ADMIN_KINDS = {"start", "stop", "apply", "create", "delete", "conflict"}
ENGINE_KINDS = {"docker_kill", "docker_stop", "docker_rm", "docker_start_exited", "docker_pause", "forge", "rename"}
MEAN_GAP_S = 0.35


def llama(**kw) -> dict:
    return {"engine": "llamacpp", "image": LLAMA_IMAGE, "source": "tiny.gguf", "threads": 1, "context_size": 256,
            "extra_args": ["--poll", "0"], **kw}


def vllm(delay: str, **kw) -> dict:
    env = {"STANDIN_LOAD_DELAY": delay, **kw.pop("env", {})}
    return {"engine": "vllm", "image": VLLM_IMAGE, "source": "org/chaos", "max_model_len": 2048,
            "extra_env": env, **kw}


# The mix: two tiny llama.cpp models, the vLLM stand-in (loads for a second), one that crashes
# while loading, one that opted in to restart_on_failure, and tiny extras; any may be deleted
# and made again.
CORE = {"llama-a": llama(), "llama-b": llama(), "vllm-a": vllm("1"),
        "crashy": vllm("0.5", env={"STANDIN_EXIT_CODE": "3"}), "phoenix": llama(restart_on_failure=True)}
EXTRAS = ("extra-0", "extra-1", "extra-2")
SLOTS = tuple(CORE) + EXTRAS


def _helper(labels: dict) -> bool:
    """A host's own helper the console keeps (its ingress, its GPU sampler): no model's container,
    so none of the model invariants is about it."""
    return labels.get("cortex.ingress") == "true" or labels.get("cortex.gpu-sampler") == "true"


@dataclass(frozen=True)
class Step:
    n: int
    kind: str
    gap_s: float  # pause before it
    slot: str  # the model it is about (admin actions, container faults)
    x: float  # a random number in [0, 1) for the step's own choices (durations, ...)


def schedule(seed: int, count: int, cover: bool = False) -> list[Step]:
    """The steps, from the seed alone: the same seed gives the same schedule. With `cover`, the
    first steps go once through every kind (the admin and container faults first, in a seeded
    order, while the models started at set-up still run; then the receiver, engine and console)."""
    rng = random.Random(seed)
    kinds, weights = zip(*WEIGHTS.items())
    small = [k for k in kinds if k in ADMIN_KINDS | ENGINE_KINDS]
    rng.shuffle(small)
    big = ["receiver_down", "engine_restart", "host_restart", "host_cut", "console_sigterm", "console_sigkill",
           "console_sigkill_mid_start", "host_outage", "engine_outage"]  # the outage last: engine faults are
    # skipped while it lasts
    assert set(small) | set(big) == set(kinds)
    first = small + big if cover else []
    steps = []
    for n in range(1, count + 1):
        kind = first[n - 1] if n <= len(first) else rng.choices(kinds, weights)[0]
        steps.append(Step(n, kind, round(rng.expovariate(1 / MEAN_GAP_S), 3), rng.choice(SLOTS), rng.random()))
    return steps


class Receiver:
    """A webhook receiver on loopback that verifies every Standard Webhooks signature and keeps
    (webhook id, model id) in arrival order; `down()` closes its port until `up()`."""

    def __init__(self, secret: str = ""):
        self.secret = secret
        self.received: list[tuple[str, Optional[int]]] = []
        self.bad = 0
        self.port = free_port()
        self._server: Optional[ThreadingHTTPServer] = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        if self._server is not None:
            return
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    payload = Webhook(outer.secret).verify(body, dict(self.headers))
                    outer.received.append((self.headers["webhook-id"], (payload.get("data") or {}).get("model_id")))
                    self.send_response(204)
                except Exception:  # noqa: BLE001 - a bad signature is counted, and refused
                    outer.bad += 1
                    self.send_response(400)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass(eq=False)  # each fault is its own, however alike
class Injected:
    step: Step
    ended: float  # monotonic: when the fault's own work ended (truth is measured from here)
    ended_able: float  # the able clock then (see Chaos.able_clock)
    # The model it hit (its row and its containers are its truth); None: the whole world's
    # (an engine, the console, a host or the receiver).
    model_id: Optional[int] = None
    last_why: str = "the engine did not answer"  # what was still wrong at its last look
    own_done: bool = False  # its model's truth is back (time to truth recorded)
    world_done: bool = False  # every row and container agreed too (recorded apart)


@dataclass
class Stats:
    faults: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    truth: dict[str, list[float]] = field(default_factory=dict)  # until its own model's truth is back
    world: dict[str, list[float]] = field(default_factory=dict)  # until every row and container agreed
    unresolved: dict[str, int] = field(default_factory=dict)
    api: dict[str, int] = field(default_factory=dict)  # status codes seen by the admin actions
    console_starts: list[float] = field(default_factory=list)
    harness_errors: int = 0
    snapshots: int = 0  # both sides read and checked
    able_snapshots: int = 0  # ... while the console served and the engine answered (every clock running)


class Chaos:
    def __init__(self, seed: int, minutes: float, workdir: Path, engine: engines.Engine, cover: bool,
                 out: Callable[[str], None] = print, port: Optional[int] = None, remote: Optional[RemoteHost] = None):
        self.seed, self.minutes, self.workdir, self.engine, self.cover = seed, minutes, workdir, engine, cover
        self.port = port
        self.out = out
        self.client = docker.DockerClient(base_url=engine.host, timeout=60)
        # The other host (None: --one-host): its engine read through its own socket, which a cut
        # of its network does not reach (the harness sees what the console cannot).
        self.remote = remote
        self.far: Optional[docker.DockerClient] = None
        self.host_up = True  # no fault of the other host's under way
        self._far_engine_up = True  # its engine runs (the harness can read it)
        self.stats = Stats()
        self.violations: list[str] = []
        self.tracker = Tracker()
        self.step_no = 0
        self.log: list[str] = []  # every step, for the replay line
        self.lock = threading.Lock()
        self.engine_up = True
        self.console_up = False
        self.able_since: Optional[float] = None
        self._able_total = 0.0  # able seconds before able_since
        self.pending: list[Injected] = []
        self.inflight = 0
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {}  # every model id the run made -> its slot (deleted ones too)
        self.forged_names: dict[str, str] = {}  # forged container id -> its name, where, and how it dies
        self.recent: deque[Snapshot] = deque(maxlen=int(RECENT_S / SAMPLE_EVERY_S))
        self.configs: dict[str, dict] = {}
        self.policies: dict[str, Optional[str]] = {}
        self.forged = 0
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="admin")
        self.stopping = threading.Event()
        self.console: Optional[Console] = None
        self.receiver: Optional[Receiver] = None
        self.instance = ""
        self.revived: set[str] = set()  # containers the harness started again (the world's, not Cortex's)
        self.verbose = False
        self._hit: Optional[int] = None  # the model the last container fault hit

    # --- set-up -------------------------------------------------------------------------------

    def config_of(self, slot: str) -> dict:
        """A slot's model: on the other host for REMOTE_SLOTS (when there is one)."""
        config = dict(CORE.get(slot) or llama())
        if self.remote is not None and slot in REMOTE_SLOTS:
            config["host"] = FAR
        return config

    def clients(self) -> list:
        """The engines the harness reads and acts on: this one, and the other host's while it runs."""
        return [self.client] + ([self.far] if self.far is not None and self._far_engine_up else [])

    def setup(self) -> None:
        if self.remote is not None:
            self.remote.up()
            engines.copy_images(self.engine.host, self.remote.socket, (LLAMA_IMAGE, BUSYBOX_IMAGE, INGRESS_IMAGE))
            self.far = docker.DockerClient(base_url=self.remote.socket, timeout=60)
        models = self.workdir / "models"
        models.mkdir(parents=True)
        subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(models / "tiny.gguf")],
                       check=True, capture_output=True)
        self.receiver = Receiver()
        t0 = time.monotonic()
        self.console = launch(self.workdir / "data", self.port, DOCKER_HOST=self.engine.host,
                              CORTEX_MODELS_DIR=str(models),
                              CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE, CORTEX_VLLM_IMAGE=VLLM_IMAGE,
                              CORTEX_INGRESS_IMAGE=INGRESS_IMAGE, CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)
        self.stats.console_starts.append(time.monotonic() - t0)
        assert self.console.sign_in(ADMIN, PASSWORD).status_code == 200
        self.instance = self.console.instance()
        self.db_path = self.workdir / "data" / "cortex.db"
        # The endpoint, as the Settings page makes it (its secret verifies every delivery).
        from cortex_app import webhooks

        db = self.console.db()
        ep = webhooks.create_endpoint(db, url=self.receiver.url,
                                      event_types=["model.running", "model.stopped", "model.failed"])
        db.dispose()
        self.receiver.secret = ep.secret
        if self.remote is not None:  # as an admin adds it on the Hosts page
            r = self._call("POST", "/api/hosts", "add host", json={
                "name": FAR, "endpoint": self.remote.tls_url, "tls_ca": self.remote.pki.ca_pem,
                "tls_cert": self.remote.client_cert, "tls_key": self.remote.client_key})
            assert r is not None and r.status_code == 201, r.text if r is not None else "no answer"
        for name in SLOTS:
            self._create(name, self.config_of(name))
        # The world starts with models running, so the first faults have something to hit.
        for name in ("llama-a", "llama-b", "vllm-a", "phoenix"):
            self._call("POST", f"/api/models/{self.ids[name]}/start", "start")
        for name in ("llama-a", "llama-b", "vllm-a", "phoenix"):
            self.console.wait_model(self.ids[name], "running", timeout=60)
        self._set_able(True)

    def _create(self, name: str, config: dict) -> Optional[httpx.Response]:
        body = {"name": name, **config}
        r = self._call("POST", "/api/models", "create", json=body)
        if r is not None and r.status_code == 201:
            self.ids[name], self.configs[name] = r.json()["id"], body
            self.names[self.ids[name]] = name
        return r

    # --- shared state -------------------------------------------------------------------------

    def _set_able(self, console_up: Optional[bool] = None, engine_up: Optional[bool] = None,
                  host_up: Optional[bool] = None) -> None:
        with self.lock:
            if console_up is not None:
                self.console_up = console_up
            if engine_up is not None:
                self.engine_up = engine_up
            if host_up is not None:
                self.host_up = host_up
            able = self.console_up and self.engine_up and self.host_up
            if not able and self.able_since is not None:
                self._able_total += time.monotonic() - self.able_since
                self.able_since = None
            elif able and self.able_since is None:
                self.able_since = time.monotonic()

    def able_clock(self, at: Optional[float] = None) -> float:
        """Seconds the console could act (serving, both engines answering) since the run began,
        at monotonic time `at`: time to truth is counted on this clock, since nothing can be put
        right while the console or an engine is away (a console restart takes seconds; a host
        cut off keeps its models' states, which only its return can put right)."""
        with self.lock:
            at = time.monotonic() if at is None else at
            return self._able_total + (max(0.0, at - self.able_since) if self.able_since is not None else 0.0)

    def _ended(self, step: Step, model_id: Optional[int] = None) -> Injected:
        now = time.monotonic()
        return Injected(step, now, self.able_clock(now), model_id)

    def violation(self, text: str) -> None:
        line = f"VIOLATION at step {self.step_no} (seed {self.seed}): {text}"
        with self.lock:
            self.violations.append(line)
        self.out(line)
        for earlier in self.log[-8:]:
            self.out(f"    after {earlier}")
        if isinstance(text, Found):
            self._context(text)

    def _context(self, found: Found) -> None:
        """What the harness saw of a violation's subject around it: its row and containers in the
        recent snapshots, and the console's log lines that name it."""
        seen = around(found, list(self.recent))
        if seen:
            self.out("    seen by the harness (seconds from when the condition began):")
            for line in seen:
                self.out(f"      {line}")
        if found.since is None or self.console is None:
            return
        begun = time.time() - (time.monotonic() - found.since)
        forged = self.forged_names.get(found.container_id or "")
        if forged:
            self.out(f"    the forged container: {forged}")
        words = [w for w in (self.names.get(found.model_id), found.container_id and found.container_id[:12],
                             forged and forged.split()[0]) if w]
        said = []
        try:
            lines = self.console.log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for text in lines[-2000:]:
            at = _log_time(text)
            if at is not None and at >= begun - CONSOLE_LOG_BEFORE_S and any(f" {w}" in text for w in words):
                said.append(f"      {at - begun:+7.2f} s  {text[24:][:220]}")
        if said:
            self.out(f"    the console's log about {', '.join(words)}:")
            for line in said[-15:]:
                self.out(line)

    # --- the HTTP API, as an admin's script ----------------------------------------------------

    def _call(self, method: str, path: str, what: str, **kw) -> Optional[httpx.Response]:
        try:
            r = self.console.call(method, path, timeout=90, **kw)
        except httpx.HTTPError as exc:  # the console is down (a restart under way)
            key = f"{what} {type(exc).__name__}"
            with self.lock:
                self.stats.api[key] = self.stats.api.get(key, 0) + 1
            return None
        key = f"{what} {r.status_code}"
        with self.lock:
            self.stats.api[key] = self.stats.api.get(key, 0) + 1
        # 503 is a start, apply or stop the engine refused (the row says why); anything else 5xx is a bug.
        if r.status_code >= 500 and not (r.status_code == 503 and path.endswith(("/start", "/apply", "/stop"))):
            self.violation(f"{method} {path} answered {r.status_code}: {r.text[:200]}")
        return r

    def _admin(self, step: Step, verb: str, slot: str) -> None:
        mid = self.ids.get(slot)
        if verb == "create":
            if slot not in self.ids:
                self._create(slot, self.config_of(slot))
            return
        if mid is None:
            return
        if verb == "delete":
            r = self._call("DELETE", f"/api/models/{mid}", "delete")
            if r is not None and r.status_code in (204, 404):
                self.ids.pop(slot, None)
            return
        if verb == "apply":
            config = dict(self.configs[slot])
            key = "context_size" if config["engine"] == "llamacpp" else "max_model_len"
            config[key] = {256: 128, 128: 256, 2048: 4096, 4096: 2048}[config[key]]
            r = self._call("PUT", f"/api/models/{mid}", "edit", json=config)
            if r is not None and r.status_code == 200:
                self.configs[slot] = config
        self._call("POST", f"/api/models/{mid}/{verb}", verb)

    def _submit(self, step: Step, verb: str, slot: str) -> None:
        with self.lock:
            self.inflight += 1

        mid = self.ids.get(slot)

        def run():
            try:
                self._admin(step, verb, slot)
            except Exception as exc:  # noqa: BLE001 - the harness reports, never dies
                self.out(f"step {step.n} ({verb} {slot}): harness error {exc!r}")
            finally:
                done = self._ended(step, mid if mid is not None else self.ids.get(slot))
                with self.lock:
                    self.inflight -= 1
                    self.pending.append(done)

        self.pool.submit(run)

    # --- the world ------------------------------------------------------------------------------

    def containers(self, **filters) -> list:
        """Our containers on every engine that runs (each object acts on its own engine)."""
        labels = [f"cortex.instance={self.instance}"] + filters.pop("labels", [])
        return [c for client in self.clients()
                for c in client.containers.list(all=True, filters={"label": labels, **filters}) if not _helper(c.labels)]

    def _client_of(self, slot: str):
        """The engine a slot's model runs on."""
        return self.far if self.far is not None and slot in REMOTE_SLOTS and self._far_engine_up else self.client

    def _target(self, slot: str, status: str = "running"):
        """A container of the slot's model in `status`, else any such container of ours."""
        mid = self.ids.get(slot)
        found = [c for c in self.containers(status=status) if c.labels.get(FORGED) != "1"]
        mine = [c for c in found if c.labels.get("cortex.model-id") == str(mid)]
        return (mine or found or [None])[0]

    def _world(self, step: Step) -> Optional[int]:
        """A fault through the engine; the model whose container it hit (-1 for a container of
        no model), None when there was nothing to do it to."""
        kind = step.kind
        if kind == "forge":
            mid = self.ids.get(step.slot, 9999)
            stubborn = step.x < 0.5
            script = "trap '' TERM; while :; do sleep 1; done" if stubborn else "while :; do sleep 1; done"
            self.forged += 1
            name = f"chaos-forged-{self.seed}-{self.forged}"
            where = "the other host" if self._client_of(step.slot) is not self.client else "this engine"
            c = self._client_of(step.slot).containers.run(BUSYBOX_IMAGE, ["sh", "-c", script], detach=True,
                                       name=name,
                                       labels={"cortex.managed": "true", "cortex.instance": self.instance,
                                               "cortex.model-id": str(mid), "cortex.spec-hash": "forged",
                                               FORGED: "1"}, restart_policy={"Name": "no"})
            self.forged_names[c.id] = f"{name} ({where}, {'ignores' if stubborn else 'obeys'} SIGTERM)"
            return mid
        if kind == "docker_start_exited":
            c = self._target(step.slot, "exited")
            if c is None:  # make one: kill a running one and start it again at once
                c = self._target(step.slot)
                if c is None:
                    return None
                c.kill()
            self.revived.add(c.id)
            c.start()
            return _model_of(c)
        c = self._target(step.slot)
        if c is None:
            return None
        if kind == "docker_kill":
            c.kill()
        elif kind == "docker_stop":
            c.stop(timeout=2)
        elif kind == "docker_rm":
            c.remove(force=True)
        elif kind == "docker_pause":
            c.pause()
        elif kind == "rename":
            c.rename(f"chaos-renamed-{self.seed}-{step.n}")
        return _model_of(c)

    def _engine_back(self) -> None:
        self.engine.start()
        self._set_able(engine_up=True)
        done = self._ended(Step(self.step_no, "engine_outage", 0, "", 0))
        with self.lock:
            self.pending.append(done)

    def _host_back(self, kind: str) -> None:
        """The other host's fault ends: its network back, or its engine started again."""
        if kind == "host_cut":
            self.remote.restore()
        else:
            self.remote.start_engine()
            self._far_engine_up = True
        self._set_able(host_up=True)
        done = self._ended(Step(self.step_no, kind, 0, "", 0))
        with self.lock:
            self.pending.append(done)

    def _host_fault(self, step: Step) -> Optional[float]:
        if self.remote is None or not self.host_up:
            return None
        self._set_able(host_up=False)
        if step.kind == "host_restart":
            self._far_engine_up = False
            self.remote.stop_engine()
            self.remote.start_engine()
            self._far_engine_up = True
            self._set_able(host_up=True)
            return time.monotonic()
        if step.kind == "host_cut":
            self.remote.cut()
        else:
            self._far_engine_up = False
            self.remote.stop_engine()
        self.timers.append((time.monotonic() + 3 + 9 * step.x, lambda: self._host_back(step.kind)))
        return -1.0  # measured from the host's return

    def _restart_console(self, step: Step) -> None:
        """SIGTERM or SIGKILL the console (after a Start, for the mid-start kind), then make up."""
        engine_was_up, host_was_up = self.engine_up, self.host_up
        before = {c.id for c in self.containers()} if engine_was_up else set()
        began = time.time()
        if step.kind == "console_sigkill_mid_start":
            mid = self.ids.get(step.slot) or next(iter(self.ids.values()), None)
            if mid is not None:  # every model deleted: a plain kill
                threading.Thread(target=self._call, args=("POST", f"/api/models/{mid}/start", "start"),
                                 daemon=True).start()
                time.sleep(0.15 * step.x)
        self._set_able(console_up=False)
        if step.kind == "console_sigterm":
            self.console.stop()
        else:
            self.console.kill()
        t0 = time.monotonic()
        self.console.start()  # make up; a console that does not come back ends the run (ConsoleFailed)
        self.stats.console_starts.append(time.monotonic() - t0)
        if engine_was_up and self.engine_up:
            # With the default policy nothing of the old run may be left once it serves. (The
            # other host's, if it was away meanwhile: at its first answer, see below.)
            survivors = before & {c.id for c in self.containers()}
            if not (host_was_up and self.host_up) and self.far is not None:
                survivors -= {c.id for c in self.far.containers.list(all=True)} if self._far_engine_up else set()
            for cid in survivors:
                self.violation(f"container {cid[:12]} of the old run survived the console restart")
            for r in self._rows():
                started = _ts(r["started_at"])
                away = not (host_was_up and self.host_up) and r["host_id"] != 1
                if r["state"] in ("loading", "running") and started and started < began and not away:
                    self.violation(f"model {r['id']} still {r['state']} from the old run after the restart")
        self._set_able(console_up=True)

    # --- one step -------------------------------------------------------------------------------

    def inject(self, step: Step) -> Optional[float]:
        """Do the step; returns when its own work ended (monotonic), or None if it was skipped."""
        kind = step.kind
        if kind in ADMIN_KINDS:
            if (kind == "create") == (step.slot in self.ids):
                return None  # no such model to act on (deleted), or it exists already (create)
            if kind == "conflict":  # two or three admins at once, on one model
                verbs = ["start", "stop", "apply", "start", "delete"]
                for i in range(2 + (step.x > 0.5)):
                    self._submit(step, verbs[int(step.x * 7 + i * 3) % len(verbs)], step.slot)
            else:
                self._submit(step, kind, step.slot)
            return -1.0  # its end is recorded by the request's thread
        if kind in HOST_KINDS:
            return self._host_fault(step)
        if kind in ENGINE_KINDS:
            if not self.engine_up:
                return None
            try:
                hit = self._world(step)
            except docker.errors.DockerException:  # it raced the console (the container went meanwhile): still a fault
                hit = self.ids.get(step.slot, -1)
            self._hit = hit
            return time.monotonic() if hit is not None else None
        if kind == "engine_restart":
            if not self.engine_up:
                return None
            self._set_able(engine_up=False)
            self.engine.restart()
            self._set_able(engine_up=True)
            return time.monotonic()
        if kind == "engine_outage":
            if not self.engine_up:
                return None
            self._set_able(engine_up=False)
            self.engine.stop()
            self.timers.append((time.monotonic() + 5 + 15 * step.x, self._engine_back))
            return -1.0  # measured from the engine's return
        if kind.startswith("console_"):
            self._restart_console(step)
            return time.monotonic()
        if kind == "receiver_down":
            if self.receiver._server is None:
                return None
            self.receiver.down()
            self.timers.append((time.monotonic() + 2 + 3 * step.x, self.receiver.up))
            return time.monotonic()
        raise ValueError(kind)

    def _tick(self, until: float) -> None:
        """Sleep until `until`, running the timers that come due meanwhile."""
        while True:
            now = time.monotonic()
            for due in [t for t in self.timers if t[0] <= now]:
                self.timers.remove(due)
                due[1]()
            if now >= until:
                return
            time.sleep(min(0.02, until - now))

    # --- watching -------------------------------------------------------------------------------

    def _rows(self) -> list[dict]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(
                "SELECT id, state, container_id, spec_hash, state_changed_at, started_at, host_id FROM model")]
        finally:
            conn.close()

    def snapshot(self) -> Optional[Snapshot]:
        t, wall = time.monotonic(), time.time()
        raw = []
        try:
            for client in self.clients():  # the other host's engine while it runs: the local checks go on
                raw += [(client, r) for r in client.api.containers(
                    all=True, filters={"label": f"cortex.instance={self.instance}"})]
        except (docker.errors.DockerException, OSError, Exception):  # noqa: BLE001 - an engine is away
            return None
        ctrs = []
        for client, r in raw:
            cid, labels = r["Id"], r.get("Labels") or {}
            if _helper(labels):
                continue
            if cid not in self.policies:
                try:
                    self.policies[cid] = client.api.inspect_container(cid)["HostConfig"]["RestartPolicy"]["Name"]
                except Exception:  # noqa: BLE001 - gone meanwhile
                    self.policies[cid] = None
            mid = labels.get("cortex.model-id", "")
            worldly = labels.get(FORGED) == "1" or cid in self.revived  # the harness's doing, not Cortex's
            ctrs.append(Ctr(cid, int(mid) if mid.isdigit() else None, r.get("State", ""),
                            labels.get("cortex.spec-hash"), worldly, self.policies[cid]))
        rows = tuple(Row(r["id"], r["state"], r["container_id"], r["spec_hash"], _ts(r["state_changed_at"]) or 0.0)
                     for r in self._rows())
        return Snapshot(t, wall, tuple(ctrs), rows)

    def watch(self) -> None:
        """The sampler: every SAMPLE_EVERY_S, both sides, every invariant; resolves time to truth."""
        while not self.stopping.is_set():
            t0 = time.monotonic()
            try:
                snap = self.snapshot()
            except sqlite3.Error:
                snap = None
            if snap is not None:
                with self.lock:
                    able = self.able_since
                self.stats.snapshots += 1
                self.recent.append(snap)
                self.stats.able_snapshots += able is not None
                for v in self.tracker.check(snap, able):
                    self.violation(v)
                with self.lock:
                    due = [p for p in self.pending if p.ended <= snap.t]
                everyone = disagreement(snap) if due else None
                clock = self.able_clock(snap.t)
                for p in due:  # each fault's own truth: its model's row and containers (or the world's)
                    took = max(0.0, clock - p.ended_able)
                    why = everyone if p.model_id is None or everyone is None else disagreement(snap, p.model_id)
                    if able is None:
                        p.last_why = "the console or the engine was away"
                        continue
                    if why is not None:
                        p.last_why = why
                    elif not p.own_done:
                        p.own_done = True
                        self.stats.truth.setdefault(p.step.kind, []).append(took)
                        if took > SLOW_TRUTH_S and self.verbose:
                            self.out(f"  slow truth: step {p.step.n} {p.step.kind} took {took:.1f} s; "
                                     f"last disagreement: {p.last_why}")
                    if everyone is None and not p.world_done:
                        p.world_done = True
                        self.stats.world.setdefault(p.step.kind, []).append(took)
                with self.lock:
                    self.pending = [p for p in self.pending if not (p.own_done and p.world_done)]
            self.stopping.wait(max(0.0, SAMPLE_EVERY_S - (time.monotonic() - t0)))

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> int:
        self.setup()
        sampler = threading.Thread(target=self.watch, name="chaos-sampler", daemon=True)
        sampler.start()
        end = time.monotonic() + self.minutes * 60
        last_progress = time.monotonic()
        steplog = open(self.workdir / "chaos-steps.log", "w", buffering=1)  # every step, timed (--keep keeps it)
        for step in schedule(self.seed, 100_000, self.cover):
            if time.monotonic() + step.gap_s >= end:
                break
            if step.kind == "receiver_down" and time.monotonic() > end - 20:
                continue  # deliveries must have time to catch up before the end
            self._tick(time.monotonic() + step.gap_s)
            self.step_no = step.n
            self.log.append(f"step {step.n}: {step.kind} {step.slot} x={step.x:.2f}")
            steplog.write(f"{time.time():.3f} {self.log[-1]}\n")
            try:
                ended = self.inject(step)
            except ConsoleFailed as exc:
                self.violation(f"the console did not come back after {step.kind}: {exc}")
                break
            except Exception as exc:  # noqa: BLE001 - the harness's own trouble, reported, never hidden
                self.out(f"step {step.n} ({step.kind}): harness error {exc!r}")
                self.stats.harness_errors += 1
                ended = time.monotonic()
            if ended is None:
                self.stats.skipped[step.kind] = self.stats.skipped.get(step.kind, 0) + 1
                continue
            self.stats.faults[step.kind] = self.stats.faults.get(step.kind, 0) + 1
            if ended >= 0:
                done = Injected(step, ended, self.able_clock(ended),
                                self._hit if step.kind in ENGINE_KINDS else None)
                with self.lock:
                    self.pending.append(done)
            if time.monotonic() - last_progress > 30:
                last_progress = time.monotonic()
                self.out(f"chaos: {sum(self.stats.faults.values())} faults, {len(self.violations)} violations, "
                         f"{(end - time.monotonic()) / 60:.1f} min left")
        steplog.close()
        return self.finish(sampler)

    def finish(self, sampler: threading.Thread) -> int:
        # Quiet: every fault's effect is over (the engine and the receiver back, admins done).
        while self.timers:
            self._tick(min(t for t, _ in self.timers))
        deadline = time.monotonic() + 120
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        quiet = time.monotonic()
        while time.monotonic() < quiet + 30:  # truth within seconds; the referee keeps watching
            snap = self.snapshot()
            if snap is not None and agrees(snap) and not self.pending:
                break
            time.sleep(0.1)
        time.sleep(1.5)  # a last look: nothing comes back by itself
        deliveries = self._wait_deliveries(deadline=time.monotonic() + 150)
        self.stopping.set()
        sampler.join(5)
        for p in self.pending:
            self.stats.unresolved[p.step.kind] = self.stats.unresolved.get(p.step.kind, 0) + 1
            self.violation(f"{p.step.kind} (step {p.step.n}): rows and containers never agreed again")
        events = self._events()
        for v in timeline_violations(events):
            self.violation(v)
        for v in webhook_violations(events, deliveries, self.receiver.received, self.receiver.bad):
            self.violation(v)
        return self.report(len(deliveries))

    def _events(self) -> list[Event]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return [Event(*r) for r in conn.execute(
                "SELECT id, model_id, from_state, to_state, reason FROM model_event WHERE kind = 'state'")]
        finally:
            conn.close()

    def _wait_deliveries(self, deadline: float) -> list[Delivery]:
        while True:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
            try:
                rows = [Delivery(*r) for r in conn.execute(
                    "SELECT id, message_id, event_type, model_id, status FROM webhook_delivery ORDER BY id")]
            finally:
                conn.close()
            if all(d.status != "pending" for d in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.5)

    def report(self, deliveries: int) -> int:
        total = sum(self.stats.faults.values())
        self.out("")
        self.out(f"chaos: seed {self.seed}, {self.minutes:g} min, {total} faults, {len(self.violations)} violations, "
                 f"{deliveries} webhook deliveries ({len(self.receiver.received)} arrivals)")
        # Time to truth: until the fault's own model agrees again (a fault of the engine, the
        # console, a host or the receiver: every model). Beside it, until everything agreed,
        # which waits for whatever other faults were doing meanwhile.
        self.out(f"{'fault':28s} {'count':>6s}  {'time to truth p50':>17s} {'p95':>8s} {'max':>8s}"
                 f"   {'all agree p95':>13s} {'max':>8s}")
        for kind in WEIGHTS:
            n = self.stats.faults.get(kind, 0)
            if not n:
                continue
            ttt, world = self.stats.truth.get(kind, []), self.stats.world.get(kind, [])
            figures = (f"{statistics.median(ttt):15.2f} s {pct(ttt, 95):6.2f} s {max(ttt):6.2f} s" if ttt
                       else f"{'-':>17s}{'':18s}")
            figures += f"   {pct(world, 95):11.2f} s {max(world):6.2f} s" if world else ""
            self.out(f"{kind:28s} {n:6d}  {figures}")
        starts = self.stats.console_starts
        self.out(f"console started {len(starts)} times (make up), median {statistics.median(starts):.1f} s; "
                 f"{self.stats.snapshots} snapshots of both sides checked ({self.stats.able_snapshots} with "
                 f"the console and the engine up), every {SAMPLE_EVERY_S * 1000:.0f} ms")
        if self.stats.harness_errors:
            self.out(f"harness errors (see above): {self.stats.harness_errors}")
        if self.stats.skipped:
            self.out("skipped (nothing to act on, or the engine was away): " +
                     ", ".join(f"{k} {v}" for k, v in sorted(self.stats.skipped.items())))
        self.out("admin API answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.stats.api.items())))
        for v in self.violations:
            self.out(v)
        summary = {"seed": self.seed, "minutes": self.minutes, "faults": self.stats.faults,
                   "snapshots": self.stats.snapshots, "able_snapshots": self.stats.able_snapshots,
                   "violations": self.violations,
                   "time_to_truth": {k: {"p50": statistics.median(v), "p95": pct(v, 95), "max": max(v), "n": len(v)}
                                     for k, v in self.stats.truth.items() if v},
                   "until_all_agree": {k: {"p50": statistics.median(v), "p95": pct(v, 95), "max": max(v), "n": len(v)}
                                       for k, v in self.stats.world.items() if v}}
        (self.workdir / "chaos-report.json").write_text(json.dumps(summary, indent=1))
        return 1 if self.violations else 0

    def close(self) -> None:
        self.stopping.set()
        if self.console is not None:
            self.console.stop()
            for client in [self.client] + ([self.far] if self.far is not None else []):
                try:
                    for c in self.console.containers(client):
                        c.remove(force=True)
                except Exception:  # noqa: BLE001
                    pass
            self.console.close()
        if self.remote is not None:
            if self.far is not None:
                self.far.close()
            self.remote.down()
        if self.receiver is not None:
            self.receiver.down()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _model_of(c) -> int:
    """The model a container of ours belongs to, by its label (-1: none)."""
    mid = c.labels.get("cortex.model-id", "")
    return int(mid) if mid.isdigit() else -1


def _log_time(line: str) -> Optional[float]:
    """The unix time of a console log line ("2026-12-07 15:46:00,572 INFO ...", UTC), if it has one."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _ts(value) -> Optional[float]:
    """A datetime as SQLite keeps it (UTC, no zone) -> unix time."""
    if not value:
        return None
    return datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc).timestamp()


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[list[str]] = None) -> int:
    # SIGTERM (a CI timeout, kill) ends the run like Ctrl-C: the console and its containers are
    # cleaned up in the `finally` below, not left behind.
    signal.signal(signal.SIGTERM, _interrupted)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="of each seed's run")
    p.add_argument("--seed", type=int, action="append", default=[],
                   help="replay a run (printed by every run); may be given more than once")
    p.add_argument("--seeds", type=int, default=0, help="also run this many new random seeds, one after another")
    p.add_argument("--cover", action="store_true", help="begin with every kind of fault once")
    p.add_argument("--keep", action="store_true", help="keep the work folder (console log, database, report)")
    p.add_argument("--verbose", action="store_true", help="say what was still wrong when truth took long")
    p.add_argument("--port", type=int, default=None,
                   help="the console's port (a free one by default; make up compiles once per port)")
    p.add_argument("--one-host", action="store_true", help="only the console's own engine (no other host: no "
                   "network namespace, no root needed for one)")
    p.add_argument("--restartable", action="store_true",
                   help="DOCKER_HOST is an engine this run may restart (scripts/engine.sh finds it through "
                        "CORTEX_ENGINE_DIR / CORTEX_ENGINE_BRIDGE); without it, one is chosen (tests/engines.py)")
    args = p.parse_args(argv)
    fresh = random.SystemRandom()
    seeds = args.seed + [fresh.randrange(1, 10**6) for _ in range(args.seeds)]
    seeds = seeds or [fresh.randrange(1, 10**6)]
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        print("chaos: DOCKER_HOST is not set (make chaos, or eval \"$(scripts/engine.sh up)\")", file=sys.stderr)
        return 2
    if args.restartable and engines.host_of(dict(os.environ)) != host:
        print(f"chaos: --restartable, but scripts/engine.sh (CORTEX_ENGINE_DIR={os.environ.get('CORTEX_ENGINE_DIR', '')})"
              f" does not run DOCKER_HOST={host}: it would restart another engine", file=sys.stderr)
        return 2
    engine = (engines.Engine(host, dict(os.environ), started_here=False) if args.restartable
              else engines.restartable(host, images=(LLAMA_IMAGE, VLLM_IMAGE, BUSYBOX_IMAGE)))
    if len(seeds) > 1:
        print(f"chaos: {len(seeds)} seeds, {args.minutes:g} min each: {', '.join(map(str, seeds))}", flush=True)
    results = []
    try:
        for seed in seeds:
            results.append((seed, run_one(seed, args, engine)))
    finally:
        engines.release(engine)
    if len(results) > 1:
        print(f"\nchaos: {len(results)} seeds")
        for seed, (code, violations) in results:
            print(f"  seed {seed}: {violations} violations" + (f" (exit {code})" if code not in (0, 1) else "")
                  + f"   replay: make chaos MINUTES={args.minutes:g} SEED={seed}")
    return max(code for _, (code, _) in results)


def run_one(seed: int, args, engine: engines.Engine) -> tuple[int, int]:
    """One seed's run, on its own console, work folder and other host: (exit status, violations)."""
    workdir = Path(tempfile.mkdtemp(prefix="cortex-chaos-"))
    print(f"chaos: seed {seed}, {args.minutes:g} min, engine {engine.host}, work folder {workdir}", flush=True)
    remote = None if args.one_host else RemoteHost("cxq-far", 16, tls=True, ssh=False)
    chaos = Chaos(seed, args.minutes, workdir, engine, args.cover, out=lambda s: print(s, flush=True),
                  port=args.port, remote=remote)
    chaos.verbose = args.verbose
    try:
        return chaos.run(), len(chaos.violations)
    finally:
        chaos.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
