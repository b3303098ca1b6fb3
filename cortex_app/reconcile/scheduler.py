"""The one module that imports apscheduler: the console's background jobs.

Jobs (AsyncIOScheduler, on the app's event loop): the reconcile pass every
CORTEX_RECONCILE_INTERVAL s, health probes every CORTEX_PROBE_INTERVAL s, webhook deliveries,
GPU samples and the leader lease. Each job runs only on the leader, never overlaps itself
(max_instances=1, coalesce), and never raises out of the scheduler; its failures are counted
in episodes (jobs.py) and shown on the System page.

Two watchers pull the next pass forward between the periodic ones:
- a thread per host follows that engine's event stream: a managed container that dies, starts or pauses
  is seen in well under a second (a `die` carries its exit code, which the pass uses before
  the engine's own list catches up);
- the loading watcher probes every loading model's /health on a short cadence that backs off
  as loading goes on (probes.loading_probe_interval), and runs a pass as soon as one answers:
  the pass, and only the pass, moves it to running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Optional

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from cortex_app import __version__, hosts, journal, webhooks
from cortex_app.hosts import LOCAL_HOST_ID
from cortex_app.models import ModelState, utcnow
from cortex_app.reconcile.jobs import JobStatus, job_failed, job_succeeded
from cortex_app.reconcile.leader import LeaderLease
from cortex_app.reconcile.loop import Reconciler
from cortex_app.reconcile.probes import (LOADING_PROBE_TIMEOUT_S, close_model_client, loading_probe_interval,
                                         probe_many, scrape_many)
from cortex_app.resources import memory_in_use
from cortex_app.runtime.gpu import GpuHistory
from cortex_app.sampler import ResourceSampler
from cortex_app.gpu_samplers import GpuSamplers
from cortex_app.ingress.keeper import KEEP_EVERY_S
from cortex_app.settings import Settings
from cortex_app.webhooks import Deliverer

log = logging.getLogger(__name__)
TRIGGERING_ACTIONS = {"die", "oom", "destroy", "start", "stop", "kill", "pause", "unpause"}
EVENT_SETTLE_S = (0.05, 0.15, 0.4)
# While the engine is away the event stream is retried this often (a failed try costs nothing):
# once it answers again, the catch-up pass follows within a quarter of a second.
EVENTS_RETRY_S = 0.25
EVENTS_RETRY_REMOTE_S = 2.0
LOADING_REFRESH_S = 0.5  # the loading watcher re-reads which models load (other processes' starts)
WEBHOOK_POLL_S = 0.25  # the outbox is read this often (a query; sends only when something is due)
GPU_SAMPLE_S = 5.0
HOSTS_CHECK_S = 10.0  # every host's engine asked whether it answers (hosts.check_all), all at once
INGRESS_KEEP_S = KEEP_EVERY_S  # remote hosts' ingresses kept (cortex_app/ingress)
BOOT_INGRESS_WAIT_S = 2.0
# Which containers the stats readers follow (they sample every second themselves), and the
# engines' /metrics: a scrape of 20 models costs ~30 ms of CPU, so not more often than this.
RESOURCES_SAMPLE_S = 5.0
SHUTDOWN_DRAIN_S = 3.0  # at shutdown, how long actions under way may take before the models are stopped
JOBS = ("reconcile", "probes", "loading", "webhooks", "gpus", "resources", "hosts", "gpu-samplers", "ingress",
        "lease", "docker-events")



@dataclasses.dataclass
class _Follower:
    """The thread that follows one host's event stream: its stop flag, what wakes it between
    tries, and the stream it holds now (None between tries)."""
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    stream: Optional[Any] = None

class Coalesced:
    """Runs an async job as soon as asked (on the loop). Asks that arrive while it runs make
    exactly one more run after it, so a trigger is never lost and never piles up."""

    def __init__(self, job):
        self.job = job
        self.dirty = False
        self.task: Optional[asyncio.Task] = None

    def kick(self) -> None:
        self.dirty = True
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self.dirty:
            self.dirty = False
            await self.job()

    async def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass


class ConsoleScheduler:
    def __init__(self, reconciler: Reconciler, lease: LeaderLease, settings: Settings,
                 deliverer: Optional[Deliverer] = None):
        self.reconciler = reconciler
        self.deliverer = deliverer or Deliverer(reconciler.lc.db)
        self.gpu_history = GpuHistory()
        # Remote hosts' GPUs, through a sampler container on each (gpu_samplers.py).
        self.samplers = GpuSamplers(reconciler.lc.db, settings, reconciler.lc.runtime.instance,
                                    runtimes=reconciler.lc.runtimes)
        reconciler.lc.remote_gpu_status = self.samplers.status  # the fit check on another host
        self.resources = ResourceSampler(reconciler.lc.runtime)
        self._live: dict[int, str] = {}  # model id -> container id of each loading or running model
        self._live_here: dict[int, str] = {}  # those on this machine's engine (NVML sees their processes)
        self.docker_events_seen = 0
        self.lease = lease
        self.settings = settings
        self.jobs = {name: JobStatus(name) for name in JOBS}
        self._jobs_lock = threading.Lock()  # the events thread reports too
        self._journal = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")  # DB writes off the loop
        self._scheduler: Optional[AsyncIOScheduler] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._followers: dict[int, _Follower] = {}  # host id -> the thread following its event stream
        self._followers_lock = threading.Lock()
        self._reopened: set[int] = set()  # hosts whose stream this console closed to open it afresh
        self._loading_task: Optional[asyncio.Task] = None
        self._loading_wake: Optional[asyncio.Event] = None
        self._stopping = threading.Event()
        self.booted = False
        # Event-triggered passes and post-commit deliveries: a `die` right after a `kill`, or
        # a delivery queued during a round, is never lost.
        self._pass_lock: Optional[asyncio.Lock] = None
        self._webhook_lock: Optional[asyncio.Lock] = None
        self._reconcile_soon = Coalesced(self._reconcile_job)
        self._deliver_soon = Coalesced(self._webhook_poll)

    # --- start / stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Take the lease if free, run the boot pass (before the console serves), start jobs."""
        self._loop = asyncio.get_running_loop()
        self._pass_lock = asyncio.Lock()
        self._webhook_lock = asyncio.Lock()
        self._loading_wake = asyncio.Event()
        self.reconciler.console_started_at = utcnow()
        self.reconciler.on_subject_free = self.run_reconcile_now
        self.reconciler.may_act = lambda: self.lease.is_leader and not self._stopping.is_set()
        self.reconciler.on_host_back = self._reopen_events
        self.reconciler.on_hosts = self._sync_followers  # each pass: a host another console added
        self.reconciler.lc.listeners.append(self._on_transition)
        if await asyncio.to_thread(self.lease.acquire_or_renew):
            try:
                await self._boot()
                await asyncio.to_thread(webhooks.enqueue_system, self.reconciler.lc.db, "console.started",
                                        f"Cortex {__version__} started", self.settings.public_url)
            except Exception as exc:  # noqa: BLE001 - the console must start; the job retries the boot
                self.booted = False
                self._failed("reconcile", f"boot pass: {exc}")
        sched = AsyncIOScheduler(timezone=timezone.utc)
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=30)
        sched.add_job(self._reconcile_job, "interval", seconds=self.settings.reconcile_interval_s,
                      id="reconcile", **common)
        sched.add_job(self._probe_job, "interval", seconds=self.settings.probe_interval_s, id="probes", **common)
        sched.add_job(self._webhook_poll, "interval", seconds=WEBHOOK_POLL_S, id="webhooks", **common)
        sched.add_job(self._gpu_job, "interval", seconds=GPU_SAMPLE_S, id="gpus", **common)
        sched.add_job(self._resources_job, "interval", seconds=RESOURCES_SAMPLE_S, id="resources", **common)
        sched.add_job(self._hosts_job, "interval", seconds=HOSTS_CHECK_S, id="hosts",
                      next_run_time=datetime.now(timezone.utc), **common)  # the Hosts page knows at once
        sched.add_job(self._samplers_job, "interval", seconds=HOSTS_CHECK_S, id="gpu-samplers", **common)
        sched.add_job(self._ingress_job, "interval", seconds=INGRESS_KEEP_S, id="ingress",
                      next_run_time=datetime.now(timezone.utc), **common)  # a follower knows the ports at once
        sched.add_job(self._lease_job, "interval", seconds=max(1.0, self.lease.ttl_s / 3), id="lease", **common)
        sched.start()
        self._scheduler = sched
        self._loading_task = asyncio.create_task(self._watch_loading())
        webhooks.set_waker(self.deliver_now)
        await self.hosts_changed()  # every host's event stream followed from the start

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    async def _boot(self) -> None:
        # Other hosts' models are reached through their ingresses: their ports first (briefly:
        # a silent host is the ingress job's to wait for, not the boot's).
        await asyncio.to_thread(self.reconciler.lc.ingresses.sync, True, BOOT_INGRESS_WAIT_S)
        report = await self.reconciler.reconcile_once(boot=True)
        self.booted = not report.engine_error
        if report.engine_error:
            self._failed("reconcile", f"boot pass waits for the engine: {report.engine_error}")
            return
        self._ok("reconcile")
        log.info("boot reconcile: %d actions in %.0f ms", len(report.actions), report.duration_s * 1000)
        await self._start_on_boot()

    async def _start_on_boot(self) -> None:
        for m in await asyncio.to_thread(self.reconciler.rows):
            if m.start_on_boot and m.state in (ModelState.STOPPED, ModelState.FAILED):
                try:
                    await asyncio.to_thread(self.reconciler.lc.start, m.id, actor="console:start-on-boot",
                                            reason="start on boot")
                except Exception as exc:  # noqa: BLE001
                    log.warning("start on boot: model %s: %s", m.name, exc)

    async def stop(self) -> None:
        self._stopping.set()
        webhooks.set_waker(None)
        if self._on_transition in self.reconciler.lc.listeners:
            self.reconciler.lc.listeners.remove(self._on_transition)
        self._sync_followers([])
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._loading_task is not None:
            self._loading_task.cancel()
            try:
                await self._loading_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await self._reconcile_soon.cancel()
        await self._deliver_soon.cancel()
        self.resources.close()
        self.samplers.close()
        await close_model_client()
        was_leader = self.lease.is_leader
        try:
            if was_leader and self._pass_lock is not None:
                # Under the pass lock (no pass can start a model behind the shutdown's back), once
                # the actions of earlier passes have ended (a restart creating a container), or
                # SHUTDOWN_DRAIN_S has passed: Docker gives the whole stop 10 s.
                async with self._pass_lock:
                    await self.reconciler.drain(timeout=SHUTDOWN_DRAIN_S)
                    if not self.settings.keep_models_on_restart:
                        n = await asyncio.to_thread(self.reconciler.shutdown_models)
                        log.info("shutdown: stopped %d models", n)
        except Exception as exc:  # noqa: BLE001
            log.warning("shutdown: could not stop models: %s", exc)
        finally:
            if was_leader:
                try:
                    await asyncio.to_thread(self.lease.release)
                except Exception as exc:  # noqa: BLE001
                    log.warning("shutdown: could not release the leader lease: %s", exc)

    # --- job health -----------------------------------------------------------------------

    def _failed(self, job: str, error: str) -> None:
        with self._jobs_lock:
            line = job_failed(self.jobs[job], error, time.time())
            began = self.jobs[job].failures == 1
        if line:
            log.warning("%s", line)
        if began:
            self._journal.submit(journal.record, self.reconciler.lc.db, "job.failing", job, error)

    def _ok(self, job: str) -> None:
        with self._jobs_lock:
            line = job_succeeded(self.jobs[job], time.time())
        if line:
            log.info("%s", line)
            self._journal.submit(journal.record, self.reconciler.lc.db, "job.recovered", job, line)

    # --- jobs ---------------------------------------------------------------------------

    async def _reconcile_job(self) -> None:
        try:
            if not self.lease.is_leader or self._stopping.is_set():
                return
            async with self._pass_lock:
                if self._stopping.is_set():
                    return  # it waited for the lock while the console began to stop
                if not self.booted:
                    await self._boot()  # the engine was down when the console started
                    return
                # Other hosts' shares run on behind it: one waiting for its deadline never holds
                # up this host's next pass (an event-driven one, a fraction of a second later).
                report = await self.reconciler.reconcile_once(wait=False, others_behind=True)
            if report.engine_error:
                self._failed("reconcile", report.engine_error)
            else:
                self._ok("reconcile")
        except Exception as exc:  # noqa: BLE001 - jobs never raise out of the scheduler
            self._failed("reconcile", str(exc) or type(exc).__name__)

    async def _probe_job(self) -> None:
        try:
            if self.lease.is_leader:
                await self.reconciler.probe_running()
            self._ok("probes")
        except Exception as exc:  # noqa: BLE001
            self._failed("probes", str(exc) or type(exc).__name__)

    def _on_transition(self, model_id: int, to: ModelState) -> None:
        """A lifecycle listener (any thread): a model began loading here; watch it at once."""
        if to == ModelState.LOADING and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loading_wake.set)

    async def _watch_loading(self) -> None:
        """While any model loads, probe each one's /health when due and run a pass as soon as one
        answers 200 (or is past its startup timeout). Idle while nothing loads: woken by this
        process's starts, and it looks again every LOADING_REFRESH_S for other processes'."""
        due: dict[int, float] = {}  # model id -> when to probe it next (monotonic)
        targets = []
        refresh_at = 0.0
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if self._loading_wake.is_set() or now >= refresh_at:
                    self._loading_wake.clear()
                    refresh_at = now + LOADING_REFRESH_S
                    targets = (await asyncio.to_thread(self.reconciler.loading_targets)
                               if self.lease.is_leader and self.booted else [])
                    due = {t.model_id: due.get(t.model_id, now) for t in targets}
                wall = utcnow()
                todo = [t for t in targets if t.url and due[t.model_id] <= now]
                kick = False
                if todo:
                    results = await probe_many([(t.model_id, t.url) for t in todo], timeout=LOADING_PROBE_TIMEOUT_S,
                                               tls=self.reconciler.lc.tls_for(t.url for t in todo))
                    kick = any(r.ok for r in results.values())
                    after = time.monotonic()
                    for t in todo:
                        loading_for = (wall - t.started_at).total_seconds() if t.started_at else 0.0
                        due[t.model_id] = after + loading_probe_interval(loading_for)
                        kick = kick or loading_for > t.startup_timeout_s
                if kick:
                    self._reconcile_soon.kick()
                self._ok("loading")
                # A model with no address yet (the wiring is not known) waits for the refresh.
                wake_at = min([refresh_at, *(due[t.model_id] for t in targets if t.url)])
            except Exception as exc:  # noqa: BLE001 - the watcher never dies; the periodic pass covers it
                self._failed("loading", str(exc) or type(exc).__name__)
                wake_at = time.monotonic() + 1.0
            try:
                await asyncio.wait_for(self._loading_wake.wait(), max(0.0, wake_at - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    async def _webhook_job(self) -> None:
        """Deliver due webhooks. Its own job, with timeouts: a slow receiver delays only itself."""
        try:
            if self.lease.is_leader:
                await self.deliverer.deliver_due()
            self._ok("webhooks")
        except Exception as exc:  # noqa: BLE001
            self._failed("webhooks", str(exc) or type(exc).__name__)

    async def _gpu_job(self) -> None:
        """Sample the GPUs for the history chart (every process: the UI of each reads its own),
        and each running model's share of GPU memory where NVML can say."""
        try:
            status = await asyncio.to_thread(self.gpu_history.sample)
            if status.process_memory and self._live_here:
                await asyncio.to_thread(self.resources.record_gpu, dict(self._live_here), status.process_memory)
            self._ok("gpus")
        except Exception as exc:  # noqa: BLE001
            self._failed("gpus", str(exc) or type(exc).__name__)

    async def _hosts_job(self) -> None:
        """The leader checks every host's engine (each with a deadline of its own) and records
        what it found: reachable or not, its version, the local GPUs."""
        try:
            if self.lease.is_leader and not self._stopping.is_set():
                result = await asyncio.to_thread(hosts.check_all, self.reconciler.lc.db, self.settings)
                if result.late:
                    log.info("hosts: %d host(s) missed the deadline: %s", len(result.late), result.late)
            if not self._stopping.is_set():
                rows = await asyncio.to_thread(hosts.list_hosts, self.reconciler.lc.db)
                self._sync_followers([h.id for h in rows])
            self._ok("hosts")
        except Exception as exc:  # noqa: BLE001
            self._failed("hosts", str(exc) or type(exc).__name__)

    async def _ingress_job(self) -> None:
        """Remote hosts' ingresses: the leader keeps them (made again when dead or made
        otherwise); every console reads their ports. A job of its own, like the samplers'."""
        try:
            if not self._stopping.is_set():
                # Within its period: a host that hangs is left to its own thread (and skipped
                # while it still works), never holding up the next round.
                await asyncio.to_thread(self.reconciler.lc.ingresses.sync, self.lease.is_leader, INGRESS_KEEP_S - 1)
            self._ok("ingress")
        except Exception as exc:  # noqa: BLE001
            self._failed("ingress", str(exc) or type(exc).__name__)

    async def _samplers_job(self) -> None:
        """Remote hosts' GPU samplers: the leader keeps them (one each, made when missing);
        every console follows them for its GPUs page. A job of its own: a host that hangs here
        never holds up the hosts' checks."""
        try:
            if not self._stopping.is_set():
                await asyncio.to_thread(self.samplers.sync, self.lease.is_leader)
            self._ok("gpu-samplers")
        except Exception as exc:  # noqa: BLE001
            self._failed("gpu-samplers", str(exc) or type(exc).__name__)

    async def _resources_job(self) -> None:
        """Point the stats readers at the live containers and scrape the running engines'
        /metrics (every process: each one's pages read its own figures)."""
        try:
            if self._stopping.is_set():
                return
            rows = await asyncio.to_thread(self.reconciler.rows)
            if self._stopping.is_set():
                return  # stop() has closed the readers and the client: start neither again
            live = [m for m in rows if m.state in (ModelState.LOADING, ModelState.RUNNING) and m.container_id]
            self._live = {m.id: m.container_id for m in live}
            self._live_here = {m.id: m.container_id for m in live if m.host_id == LOCAL_HOST_ID}
            away = self.reconciler.unreachable
            remote = await asyncio.to_thread(self._runtimes_of, [m for m in live if m.host_id != LOCAL_HOST_ID
                                                                  and m.host_id not in away])
            self.resources.follow({mid: cid for mid, cid in self._live.items()
                                   if mid in self._live_here or mid in remote}, remote)
            targets = {m.id: (m.engine.value, url.removesuffix("/health") + "/metrics") for m in rows
                       if m.state == ModelState.RUNNING and (url := self.reconciler.lc.health_url(m))}
            texts = await scrape_many([(mid, url) for mid, (_, url) in targets.items()],
                                      timeout=self.reconciler.probe_timeout,
                                      tls=self.reconciler.lc.tls_for(url for _, url in targets.values()))
            at = time.time()
            for mid, (engine, _) in targets.items():  # no answer: no figures, rather than old ones
                self.resources.record_metrics(mid, engine, texts.get(mid, ""), at)
            await asyncio.to_thread(self._record_memory_peaks, rows)
            self._ok("resources")
        except Exception as exc:  # noqa: BLE001
            self._failed("resources", str(exc) or type(exc).__name__)

    def _runtimes_of(self, models: list) -> dict:
        """Model id -> the runtime of its host (one query: off the event loop)."""
        rows = {h.id: h for h in hosts.list_hosts(self.reconciler.lc.db)} if models else {}
        runtimes = self.reconciler.lc.runtimes
        return {m.id: runtimes.of(rows[m.host_id]) for m in models if m.host_id in rows}  # a host removed: none

    def _record_memory_peaks(self, rows: list) -> None:
        """Each live model's most memory held this run, beside the estimate it started with
        (written when it grew by more than 1 %: the figures move a little every second)."""
        for m in rows:
            if m.id not in self._live:
                continue
            sample = self.resources.history.latest(m.id, max_age_s=30)
            if sample is None or m.started_at is None or sample.at < m.started_at.timestamp():
                continue  # nothing yet of this run (a figure from the container before an Apply is not its own)
            used = memory_in_use(sample, m.device.value == "cuda")
            if used and used > (m.memory_used_mib or 0) * 1.01:
                self.reconciler.lc.record_memory_used(m.id, m.container_id, used)

    async def _webhook_poll(self) -> None:
        async with self._webhook_lock:  # never two delivery rounds at once (order per model)
            await self._webhook_job()

    def deliver_now(self) -> None:
        """Deliver webhooks as soon as possible (thread-safe)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver_soon.kick)

    async def _lease_job(self) -> None:
        try:
            was = self.lease.is_leader
            now = await asyncio.to_thread(self.lease.acquire_or_renew)
            if now and not was:
                log.info("leader lease taken over by %s", self.lease.holder)
                # A follower never reconciled: its first pass as leader is a normal one (the
                # models it finds were started by the old leader on an admin's request).
                self.booted = True
                self.reconciler.mark_booted()
                self.run_reconcile_now()
            self._ok("lease")
        except Exception as exc:  # noqa: BLE001
            self._failed("lease", str(exc) or type(exc).__name__)

    def run_reconcile_now(self, again_after: tuple[float, ...] = ()) -> None:
        """Run a reconcile pass as soon as possible (thread-safe), and again after each of
        `again_after` seconds."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._reconcile_soon.kick)
        for delay in again_after:
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._reconcile_soon.kick)

    # --- Docker events ------------------------------------------------------------------

    async def hosts_changed(self) -> None:
        """A host was added or removed (in this process: at once; others' at their passes and
        hosts job): follow exactly the hosts there are."""
        if self._loop is None or self._stopping.is_set():
            return  # not started (or stopping): nothing follows anything
        rows = await asyncio.to_thread(hosts.list_hosts, self.reconciler.lc.db)
        self._sync_followers([h.id for h in rows])

    def _sync_followers(self, host_ids: list[int]) -> None:
        """One thread follows each host's event stream (CORTEX_DOCKER_EVENTS); hosts removed,
        or the console stopping, have theirs stopped (the stream closed under it)."""
        wanted = set(host_ids) if self.settings.docker_events and not self._stopping.is_set() else set()
        with self._followers_lock:
            for host_id in set(self._followers) - wanted:
                follower = self._followers.pop(host_id)
                follower.stop.set()
                follower.wake.set()
                if follower.stream is not None:
                    try:
                        follower.stream.close()
                    except Exception:  # noqa: BLE001 - closing a dead stream
                        pass
            for host_id in wanted - set(self._followers):
                follower = _Follower()
                self._followers[host_id] = follower
                threading.Thread(target=self._follow_events, args=(host_id, follower),
                                 name=f"docker-events {host_id}", daemon=True).start()

    def _reopen_events(self, host_id: int) -> None:
        """Another host answers again (a pass listed it): a follower between tries tries now,
        not up to EVENTS_RETRY_REMOTE_S later, blind meanwhile; a stream it holds may hang on a
        connection that died with the network (no keepalive), so it is closed and opened afresh."""
        if host_id == LOCAL_HOST_ID:
            return
        with self._followers_lock:
            follower = self._followers.get(host_id)
            if follower is None:
                return
            stream = follower.stream
            if stream is None:
                follower.wake.set()
                return
            self._reopened.add(host_id)  # its end is ours, not the engine's
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - closing a dead stream
            pass

    def _was_reopened(self, host_id: int) -> bool:
        with self._followers_lock:
            if host_id in self._reopened:
                self._reopened.discard(host_id)
                return True
            return False

    def _follow_events(self, host_id: int, follower: _Follower) -> None:
        local = host_id == LOCAL_HOST_ID
        stop = follower.stop
        while not stop.is_set() and not self._stopping.is_set():
            try:
                stream = self.reconciler.lc.runtimes.get(host_id).events(since=int(time.time()))
                with self._followers_lock:
                    if stop.is_set():
                        stream.close()
                        return
                    follower.stream = stream
                if local:
                    self._ok("docker-events")
                self.run_reconcile_now()  # catch up on anything missed while disconnected
                for event in stream:
                    if stop.is_set() or self._stopping.is_set():
                        return
                    self.docker_events_seen += 1
                    action = event.get("Action", "").split(":")[0]
                    actor = event.get("Actor") or {}
                    self.reconciler.note_event(action, actor.get("ID") or event.get("id", ""),
                                               actor.get("Attributes") or {})
                    if action in TRIGGERING_ACTIONS:
                        # Docker's list lags its events by a moment: a few cheap passes shortly
                        # after see the settled state too.
                        self.run_reconcile_now(again_after=EVENT_SETTLE_S)
                with self._followers_lock:
                    follower.stream = None
                if not stop.is_set() and not self._stopping.is_set() and not self._was_reopened(host_id):
                    self._blind(host_id, "the event stream ended (the engine stopped)")
            except Exception as exc:  # noqa: BLE001 - the engine went away (or the host was removed): retry
                with self._followers_lock:
                    follower.stream = None
                if stop.is_set() or self._stopping.is_set():
                    return
                if self._was_reopened(host_id):
                    continue  # closed here to open it afresh: at once
                self._blind(host_id, str(exc) or type(exc).__name__)
            # Another host's engine is retried less eagerly (its outage is the hosts job's to
            # report), but at once when a pass finds it answering again (_reopen_events).
            follower.wake.wait(EVENTS_RETRY_S if local else EVENTS_RETRY_REMOTE_S)
            follower.wake.clear()

    def _blind(self, host_id: int, why: str) -> None:
        """A host's events no longer arrive: what happens there meanwhile only a pass sees. One
        looks now (another host: then again while it does not answer, and its return wakes the
        follower); the deaths it finds are the engine's doing."""
        first = host_id not in self.reconciler.interrupted
        self.reconciler.interrupted.add(host_id)
        if host_id == LOCAL_HOST_ID:
            self._failed("docker-events", why)
        elif first:
            self.run_reconcile_now()
