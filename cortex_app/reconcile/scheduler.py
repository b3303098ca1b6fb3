"""The one module that imports apscheduler: the console's background jobs.

Jobs (AsyncIOScheduler, on the app's event loop): the reconcile pass every
CORTEX_RECONCILE_INTERVAL s, health probes every CORTEX_PROBE_INTERVAL s, and the leader
lease. Each job runs only on the leader, never overlaps itself (max_instances=1,
coalesce), and never raises out of the scheduler. A thread follows Docker's event stream
and pulls the next reconcile pass forward when a managed container dies, so drift is seen
in well under a second; the periodic pass repairs whatever an event missed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timezone
from typing import Optional

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from cortex_app import __version__, webhooks
from cortex_app.models import ModelState
from cortex_app.reconcile.leader import LeaderLease
from cortex_app.reconcile.loop import Reconciler
from cortex_app.runtime.gpu import GpuHistory
from cortex_app.settings import Settings
from cortex_app.webhooks import Deliverer

log = logging.getLogger(__name__)
TRIGGERING_ACTIONS = {"die", "oom", "destroy", "start", "stop", "kill"}
EVENT_SETTLE_S = (0.05, 0.15, 0.4)
LOADING_PROBE_S = 1.0
WEBHOOK_POLL_S = 0.25
GPU_SAMPLE_S = 5.0  # the outbox is read this often (a query; sends only when something is due)  # while a model loads, its /health is checked this often


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
        self.docker_events_seen = 0
        self.lease = lease
        self.settings = settings
        self._scheduler: Optional[AsyncIOScheduler] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._events_thread: Optional[threading.Thread] = None
        self._stream = None
        self._stopping = threading.Event()
        self.booted = False
        self._failed_once: set[str] = set()
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
        if await asyncio.to_thread(self.lease.acquire_or_renew):
            try:
                await self._boot()
                await asyncio.to_thread(webhooks.enqueue_system, self.reconciler.lc.db, "console.started",
                                        f"Cortex {__version__} started", self.settings.public_url)
            except Exception as exc:  # noqa: BLE001 - the console must start; the job retries the boot
                self.booted = False
                log.warning("boot reconcile failed (%s); retrying at the next pass", exc)
        sched = AsyncIOScheduler(timezone=timezone.utc)
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=30)
        sched.add_job(self._reconcile_job, "interval", seconds=self.settings.reconcile_interval_s,
                      id="reconcile", **common)
        sched.add_job(self._probe_job, "interval", seconds=self.settings.probe_interval_s, id="probes", **common)
        sched.add_job(self._loading_job, "interval", seconds=LOADING_PROBE_S, id="loading", **common)
        sched.add_job(self._webhook_poll, "interval", seconds=WEBHOOK_POLL_S, id="webhooks", **common)
        sched.add_job(self._gpu_job, "interval", seconds=GPU_SAMPLE_S, id="gpus", **common)
        sched.add_job(self._lease_job, "interval", seconds=max(1.0, self.lease.ttl_s / 3), id="lease", **common)
        sched.start()
        self._scheduler = sched
        webhooks.set_waker(self.deliver_now)
        if self.settings.docker_events:
            self._events_thread = threading.Thread(target=self._follow_events, name="docker-events", daemon=True)
            self._events_thread.start()

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    async def _boot(self) -> None:
        report = await self.reconciler.reconcile_once(boot=True)
        self.booted = True
        if report.engine_error:
            log.warning("boot reconcile: %s; will reconcile when the engine answers", report.engine_error)
            self.booted = False
        else:
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
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream
                pass
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        await self._reconcile_soon.cancel()
        await self._deliver_soon.cancel()
        was_leader = self.lease.is_leader
        try:
            if was_leader and not self.settings.keep_models_on_restart and self._pass_lock is not None:
                # Under the pass lock: no pass can start a model behind the shutdown's back.
                async with self._pass_lock:
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

    # --- jobs ---------------------------------------------------------------------------

    def _once(self, job: str, exc: BaseException) -> None:
        """Log a job's failure once per distinct message, not at every interval."""
        key = f"{job}:{exc}"
        if key not in self._failed_once:
            self._failed_once.add(key)
            log.warning("%s job failed: %s", job, exc)

    async def _reconcile_job(self) -> None:
        try:
            if not self.lease.is_leader or self._stopping.is_set():
                return
            async with self._pass_lock:
                if not self.booted:
                    await self._boot()  # the engine was down when the console started
                    return
                report = await self.reconciler.reconcile_once()
            if report.engine_error:
                self._once("reconcile", RuntimeError(report.engine_error))
        except Exception as exc:  # noqa: BLE001 - jobs never raise out of the scheduler
            self._once("reconcile", exc)

    async def _probe_job(self) -> None:
        try:
            if self.lease.is_leader:
                await self.reconciler.probe_running()
        except Exception as exc:  # noqa: BLE001
            self._once("probes", exc)

    async def _loading_job(self) -> None:
        """While any model is loading, run a pass every second: it probes the loading models
        and moves the ready ones to running (or fails them past their timeout)."""
        try:
            if self.lease.is_leader and self.booted:
                rows = await asyncio.to_thread(self.reconciler.rows)
                if any(m.state == ModelState.LOADING for m in rows):
                    self._reconcile_soon.kick()
        except Exception as exc:  # noqa: BLE001
            self._once("loading", exc)

    async def _webhook_job(self) -> None:
        """Deliver due webhooks. Its own job, with timeouts: a slow receiver delays only itself."""
        try:
            if self.lease.is_leader:
                await self.deliverer.deliver_due()
        except Exception as exc:  # noqa: BLE001
            self._once("webhooks", exc)

    async def _gpu_job(self) -> None:
        """Sample the GPUs for the history chart (every process: the UI of each reads its own)."""
        try:
            await asyncio.to_thread(self.gpu_history.sample)
        except Exception as exc:  # noqa: BLE001
            self._once("gpus", exc)

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
                self.run_reconcile_now()
        except Exception as exc:  # noqa: BLE001
            self._once("lease", exc)

    def run_reconcile_now(self, again_after: tuple[float, ...] = ()) -> None:
        """Run a reconcile pass as soon as possible (thread-safe), and again after each of
        `again_after` seconds."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._reconcile_soon.kick)
        for delay in again_after:
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._reconcile_soon.kick)

    # --- Docker events ------------------------------------------------------------------

    def _follow_events(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                self._stream = self.reconciler.runtime.events(since=int(time.time()))
                backoff = 0.5
                self.run_reconcile_now()  # catch up on anything missed while disconnected
                for event in self._stream:
                    if self._stopping.is_set():
                        return
                    self.docker_events_seen += 1
                    if event.get("Action", "").split(":")[0] in TRIGGERING_ACTIONS:
                        # Docker publishes `die` a moment before its container list says
                        # "exited": a few cheap passes shortly after see the settled state.
                        self.run_reconcile_now(again_after=EVENT_SETTLE_S)
                if not self._stopping.is_set():
                    self.reconciler.engine_interrupted = True  # the stream ended: engine stopped
            except Exception as exc:  # noqa: BLE001 - the engine went away: retry
                if self._stopping.is_set():
                    return
                self.reconciler.engine_interrupted = True
                self._once("docker-events", exc)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 10.0)
