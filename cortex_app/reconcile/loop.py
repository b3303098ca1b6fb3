"""reconcile_once(): read -> plan -> apply -> record. One bad model never stops the pass, and
one slow model never holds up another, nor one slow host another.

Every host is reconciled at once, each on its own: one list call per host, with a deadline
(LIST_DEADLINE_S), then that host's rows, its plan, its actions. A host that does not answer
in time keeps its models' states as they are (health unknown, an event says why: never
failed en masse) and is reconciled when it answers again; its first answer after the console
started gets the boot plan.

On each host the container list is read before the rows, on purpose: a Start that races the pass then
shows up as a newer row (left alone while `starting`), never as a container the plan thinks
nobody owns. Where the list is older than the row (a container the list missed), the
action re-checks with the engine before failing anything.

Actions run concurrently, a bounded number at a time, one subject (a model, or a container
to remove) after another: a container that ignores SIGTERM delays only itself. A subject
whose actions are still running when the next pass plans, or that finished while it read
(its plan may be older than what they did), is left to the pass after (asked for when they
end), so two passes never act on one subject at once, nor on a stale view of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Hashable, Optional

from sqlmodel import Session, select

from cortex_app import crud, hosts, journal, webhooks
from cortex_app.hosts import LOCAL_HOST_ID
from cortex_app.lifecycle import (LOG_LINES_KEPT, RESTART_ACTOR, STOP_TIMEOUT_S, DoesNotFit, Lifecycle,
                                  Refused)
from cortex_app.models import EventKind, Health, Host, Model, ModelState, utcnow
from cortex_app.reconcile.plan import (LEGACY_NAME_PREFIXES, Boot, FailModel, LeaveAlone, MarkRunning, MarkStopped,
                                       ModelView, RemoveContainer, ResetRestarts, RestartModel, exit_reason,
                                       of_host, overlay_deaths, plan, subject)
from cortex_app.reconcile.probes import LOADING_PROBE_TIMEOUT_S, ProbeResult, health_update, probe_many
from cortex_app.runtime.docker import ContainerInfo, DockerRuntime, DockerRuntimeError, EngineUnreachable

log = logging.getLogger(__name__)
S = ModelState
ACTOR = "reconciler"
ACTION_WORKERS = 8  # actions of different models at once (each is mostly waiting on the engine)
DEATH_MEMORY_S = 30.0  # a `die` seen on the event stream counts until the list has long caught up
# How long a pass waits for one host's container list: the console's own engine answers in
# milliseconds, or says at once that it is down; another host may hang (a cut network).
LIST_DEADLINE_S = {True: 10.0, False: 5.0}  # local?: seconds
HEDGE_AFTER_S = 0.5  # another host's list unanswered this long is sent again on a fresh connection
LIST_TIMES_KEPT = 8  # a host's usual list time: the fastest of its last this many
RELOOK_S = 1.0  # a host whose list failed is listed again this long after that look began (a cut one: at its deadline)


@dataclass
class PassReport:
    started_at: float
    duration_s: float = 0.0
    actions: list = field(default_factory=list)
    engine_error: Optional[str] = None
    failures: list = field(default_factory=list)
    deferred: int = 0  # actions left to a later pass: their model was still busy with earlier ones
    host_errors: dict = field(default_factory=dict)  # host id -> why it was not reconciled (engine_error: host 1's)
    host_durations: dict = field(default_factory=dict)  # host id -> seconds its list, plan and launch took


@dataclass(frozen=True)
class LoadingTarget:
    """A loading model, as the loading watcher needs it."""

    model_id: int
    url: Optional[str]
    started_at: Optional[datetime]
    startup_timeout_s: int


def view(m: Model) -> ModelView:
    return ModelView(id=m.id, name=m.name, state=m.state, container_id=m.container_id, spec_hash=m.spec_hash,
                     state_changed_at=m.state_changed_at, started_at=m.started_at, ready_at=m.ready_at,
                     startup_timeout_s=m.startup_timeout_s, restart_on_failure=m.restart_on_failure,
                     restart_attempts=m.restart_attempts, restart_max_attempts=m.restart_max_attempts,
                     next_restart_at=m.next_restart_at)


class Reconciler:
    def __init__(self, lifecycle: Lifecycle, *, probe_timeout: float = 2.0, workers: int = ACTION_WORKERS):
        self.lc = lifecycle
        self.probe_timeout = probe_timeout
        self.last_report: Optional[PassReport] = None
        # Hosts whose engine went away (event stream broken, a pass could not list): the
        # failures the next good pass there finds are then named as the engine's doing.
        self.interrupted: set[int] = set()
        self.engine_up: Optional[bool] = None  # host 1's, as of the last pass: for engine.* webhooks
        self.hosts_up: dict[int, bool] = {}  # as of each host's last pass
        # When each host last went away or came back (monotonic), under a lock a health write
        # takes too: a probe that began before then says nothing of the host as it is now.
        self._host_flipped_at: dict[int, float] = {}
        self._health_lock = threading.Lock()
        self._booted: set[int] = set()  # hosts whose first answer got the boot plan
        self._boot_done = False  # a leader taking over: no host gets a boot plan (see mark_booted)
        self._list_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="reconcile-list")
        self._list_took: dict[int, deque] = {}  # host id -> seconds its last good lists took
        self._shares: dict[int, asyncio.Future] = {}  # host id -> its share of the latest pass
        self._share_again: set[int] = set()  # hosts a pass skipped while their share ran: pass again after
        self.passes = 0
        # When this console started (set by the scheduler): the boot pass treats rows started
        # later as this run's own.
        self.console_started_at: Optional[datetime] = None
        # Called (from a worker thread) when a subject a pass had to skip is free again.
        self.on_subject_free: Optional[Callable[[], None]] = None
        # Whether a pass may act now (the scheduler: still the leader, not stopping). A host's
        # share that ran on behind its pass asks again before it launches anything.
        self.may_act: Callable[[], bool] = lambda: True
        # Told (another host's id) when a pass lists it after it did not answer, or after its
        # event stream ended: the scheduler follows its events afresh (a stream may have hung
        # on the dead connection; a follower between tries tries now).
        self.on_host_back: Optional[Callable[[int], None]] = None
        # Told (every host id) at each pass: the scheduler follows each host's event stream.
        self.on_hosts: Optional[Callable[[list[int]], None]] = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile-action")
        self._busy: set[Hashable] = set()
        self._waiting: set[Hashable] = set()  # busy subjects a pass wanted to act on
        self._tasks: set[asyncio.Future] = set()  # running action groups (the loop keeps only weak refs)
        self._generation: dict[Hashable, int] = {}  # bumped each time a subject's actions end
        self._busy_lock = threading.Lock()
        self._deaths: dict[str, tuple[Optional[int], float]] = {}
        self._deaths_lock = threading.Lock()

    @property
    def runtime(self):
        return self.lc.runtime

    @property
    def engine_interrupted(self) -> bool:
        return LOCAL_HOST_ID in self.interrupted

    @engine_interrupted.setter
    def engine_interrupted(self, value: bool) -> None:
        (self.interrupted.add if value else self.interrupted.discard)(LOCAL_HOST_ID)

    @property
    def unreachable(self) -> set[int]:
        """Hosts the last pass could not list: their models are not probed."""
        return {h for h, up in dict(self.hosts_up).items() if not up}  # a copy: other threads read it too

    def mark_booted(self) -> None:
        """A leader taking over: the models it finds were started by the old leader on an
        admin's request; no host gets the boot plan."""
        self._boot_done = True

    def rows(self) -> list[Model]:
        return crud.list_models(self.lc.db)

    # --- what the event stream says ---------------------------------------------------

    def note_event(self, action: str, container_id: str, attributes: dict) -> None:
        """A container event of ours (thread-safe): remember deaths until the list shows them.
        A death stays remembered when the container is started again: Cortex never starts a
        container twice (a restart makes a new one), so a dead model container that runs again
        was revived outside Cortex, and is no more the model an admin started than a dead one."""
        if action == "die":
            code = attributes.get("exitCode", "")
            with self._deaths_lock:
                self._deaths[container_id] = (int(code) if code.lstrip("-").isdigit() else None, time.monotonic())

    def _recent_deaths(self) -> dict[str, Optional[int]]:
        cutoff = time.monotonic() - DEATH_MEMORY_S
        with self._deaths_lock:
            for cid in [cid for cid, (_, at) in self._deaths.items() if at < cutoff]:
                del self._deaths[cid]
            return {cid: code for cid, (code, _) in self._deaths.items()}

    # --- one pass -----------------------------------------------------------------------

    def _legacy(self) -> list[ContainerInfo]:
        """Containers named as an older install named its own (inspected: image, command,
        restart policy): boot only."""
        found: dict[str, ContainerInfo] = {}
        for prefix in LEGACY_NAME_PREFIXES:
            for c in self.runtime.list_by_name(prefix):
                if c.name.startswith(prefix) and c.id not in found:
                    found[c.id] = self.runtime.inspect(c.id) or c
        return list(found.values())

    async def reconcile_once(self, *, boot: bool = False, wait: bool = True,
                             others_behind: bool = False) -> PassReport:
        """One pass over every host, all at once. With `wait`, returns once its actions are
        done; without (the scheduler's passes), once they are under way: their subjects stay
        busy until they end. `boot`: every host gets the boot plan (the console's first pass);
        without it, a host this console has not seen answer before gets it (the scheduler
        sets `console_started_at`). `others_behind` (the scheduler's periodic and event-driven
        passes): other hosts' shares run on behind the return, so one that waits for its
        deadline never holds up the next pass here; a host whose share is still under way is
        left out of the passes meanwhile."""
        report = PassReport(started_at=time.time())
        t0 = time.perf_counter()
        with self._busy_lock:
            generations = dict(self._generation)  # what had ended when this pass began to read
        host_rows = await asyncio.to_thread(hosts.list_hosts, self.lc.db)
        self.lc.note_hosts(host_rows)
        if self.on_hosts is not None:
            self.on_hosts([h.id for h in host_rows])
        shares = []
        for h in host_rows:
            earlier = self._shares.get(h.id)
            if earlier is not None and not earlier.done():
                report.host_errors[h.id] = "its share of an earlier pass is still under way"
                self._share_again.add(h.id)  # a fresh look once that one ends (an event may have asked)
                continue
            share = asyncio.ensure_future(self._host_pass(h, boot, report, generations))
            self._shares[h.id] = share
            if others_behind and h.id != LOCAL_HOST_ID:
                share.add_done_callback(self._share_done)
            else:
                shares.append(share)
        launched = [task for tasks in await asyncio.gather(*shares) for task in tasks]
        self.passes += 1
        report.duration_s = time.perf_counter() - t0
        self.last_report = report
        if wait and launched:
            # Shielded: a cancelled waiter (a console stopping mid-boot) must not cancel actions
            # under way, whose subjects stay busy until they really end.
            await asyncio.shield(asyncio.gather(*launched))
        return report

    def _relook(self) -> None:
        if self.on_subject_free is not None:
            self.on_subject_free()

    def look_again(self) -> None:
        """Someone found a host silent (the gateway: a connection that did not open): a pass
        looks now rather than at its period (thread-safe; passes coalesce)."""
        self._relook()

    @staticmethod
    def _share_done(share: asyncio.Future) -> None:
        if not share.cancelled() and share.exception() is not None:
            log.warning("reconcile: a host's share of the pass failed: %s", share.exception())

    async def _list(self, host: Host) -> list[ContainerInfo]:
        """The host's managed containers, or EngineUnreachable at its deadline. Another host's
        list goes through a runtime whose calls give up near that deadline too, so a silent
        host holds no thread for long; one not answered within a few of its usual list times
        is asked again on a fresh connection (see `_hedged`)."""
        local = host.id == LOCAL_HOST_ID
        deadline = LIST_DEADLINE_S[local]
        try:
            if local:
                rt = self.lc.runtimes.lister(host, timeout=deadline + 1)
                containers = await asyncio.wait_for(asyncio.shield(self._listing(rt)), deadline)
            else:
                containers = await self._hedged(host, deadline)
        except asyncio.TimeoutError:
            await asyncio.to_thread(self.lc.runtimes.drop_lister, host.id)
            raise EngineUnreachable(f"host {host.name}: no answer within {deadline:g} s") from None
        except DockerRuntimeError as exc:
            if local:
                raise
            await asyncio.to_thread(self.lc.runtimes.drop_lister, host.id)
            if isinstance(exc, EngineUnreachable):
                raise
            raise EngineUnreachable(f"host {host.name}: {exc}") from exc
        return containers

    def _listing(self, rt: DockerRuntime) -> asyncio.Future:
        fut = asyncio.get_running_loop().run_in_executor(self._list_pool, rt.list_managed)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late failure is no stray error
        return fut

    async def _hedged(self, host: Host, deadline: float) -> list[ContainerInfo]:
        """Another host's list. Its runtime keeps its connections, and a request sent on one while
        the host was silent (a cut network) is sent again only at TCP's next retry, seconds
        after the host is back. A list still unanswered after HEDGE_AFTER_S (or four of the
        host's usual list times) is therefore sent again by a fresh lister, which connects
        with fresh tries (docker_connect.await_answer) and sees the host's return within a
        fraction of a second; the first answer counts. asyncio.TimeoutError at the deadline."""
        t0 = time.perf_counter()
        began = {self._listing(self.lc.runtimes.lister(host, timeout=deadline + 1)): t0}
        # The fastest of its last lists: one that waited for the host's return is no measure.
        took = self._list_took.setdefault(host.id, deque(maxlen=LIST_TIMES_KEPT))
        hedge = max(HEDGE_AFTER_S, 4 * min(took, default=0.0))
        done, _ = await asyncio.wait(began, timeout=min(hedge, deadline))
        if not done:
            await asyncio.to_thread(self.lc.runtimes.drop_lister, host.id)  # its next list: a fresh one too
            began[self._listing(self.lc.runtimes.lister(host, timeout=deadline + 1))] = time.perf_counter()
        tries, failure = set(began), None
        while tries:
            left = deadline - (time.perf_counter() - t0)
            done, tries = await asyncio.wait(tries, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise asyncio.TimeoutError
            for f in done:
                if f.exception() is None:
                    took.append(time.perf_counter() - began[f])
                    return f.result()
                failure = f.exception()  # the other try may still answer
        raise failure or asyncio.TimeoutError()

    async def _host_pass(self, host: Host, boot: bool, report: PassReport, generations: dict) -> list:
        """One host's share of the pass: list, read its rows, plan, launch the actions."""
        try:
            return await self._host_share(host, boot, report, generations)
        finally:
            if host.id in self._share_again:
                self._share_again.discard(host.id)
                if self.on_subject_free is not None:
                    self.on_subject_free()  # what a skipped pass would have seen: looked at now

    async def _host_share(self, host: Host, boot: bool, report: PassReport, generations: dict) -> list:
        t0 = time.perf_counter()
        local = host.id == LOCAL_HOST_ID
        rt = self.lc.runtimes.of(host)
        boot = boot or (self.console_started_at is not None and not self._boot_done and host.id not in self._booted)
        try:
            containers = await self._list(host)
            legacy: list[ContainerInfo] = []
            if boot and local:
                seen = {c.id for c in containers}
                legacy = [c for c in await asyncio.to_thread(self._legacy) if c.id not in seen]
        except EngineUnreachable as exc:
            self.interrupted.add(host.id)
            if local:
                await asyncio.to_thread(self._engine_flip, False, str(exc))
                report.engine_error = str(exc)
            else:
                report.host_errors[host.id] = str(exc)
                # Looked at again soon, not at the next periodic pass: each list connects afresh
                # and sees the host's return within a fraction of a second (docker_connect.
                # await_answer). Not sooner than RELOOK_S after this look began: an engine that
                # refuses at once would otherwise have passes run back to back.
                wait = max(0.0, RELOOK_S - (time.perf_counter() - t0))
                asyncio.get_running_loop().call_later(wait, self._relook)
            # Keep every state as it is: an engine outage is not a reason to flip models en
            # masse. The next pass after the engine returns sees the truth.
            await asyncio.to_thread(self._host_flip, host, False, str(exc))
            report.host_durations[host.id] = time.perf_counter() - t0
            return []
        if local:
            await asyncio.to_thread(self._engine_flip, True, "the Docker Engine answers again")
            await asyncio.to_thread(self.lc.try_placement)  # probes need to know how to reach models
        was_up = self.hosts_up.get(host.id)
        await asyncio.to_thread(self._host_flip, host, True, "")
        if not local and (was_up is False or host.id in self.interrupted) and self.on_host_back is not None:
            # Its event stream ended or may hang (the host was away): followed afresh now, so
            # what happens there next is seen at once, not at a pass of its own.
            await asyncio.to_thread(self.on_host_back, host.id)
        everyone = await asyncio.to_thread(self.rows)
        rows = [m for m in everyone if m.host_id == host.id]
        elsewhere = frozenset(m.id for m in everyone if m.host_id != host.id)
        containers = overlay_deaths(of_host(containers, host.id), self._recent_deaths())
        # Only containers that run are asked: one that is paused or dead never answers, and the
        # plan fails its model without a probe (a probe would only hold up the pass).
        serving = {c.id for c in containers if c.running}
        targets = [(m.id, url) for m in rows if m.state in (S.LOADING, S.RUNNING if boot else S.LOADING)
                   and m.container_id in serving and (url := self.lc.health_url(m))]
        # Loading models answer at once (503, or refused): a short timeout keeps one that hangs
        # from holding up the pass. At boot, adoption asks running models with the full one.
        probes = await probe_many(targets, timeout=self.probe_timeout if boot
                                  else min(self.probe_timeout, LOADING_PROBE_TIMEOUT_S),
                                  tls=self.lc.tls_for(url for _, url in targets))
        healthy = {mid for mid, r in probes.items() if r.ok}
        boot_ctx = None
        if boot:
            policies = {}
            for c in containers:
                try:
                    info = await asyncio.to_thread(rt.inspect, c.id)
                except DockerRuntimeError:
                    info = None  # unknown policy: never adopted
                policies[c.id] = info.restart_policy if info else None
            settings = self.lc.settings
            boot_ctx = Boot(keep_models=settings.keep_models_on_restart, restart_policies=policies,
                            since=self.console_started_at, legacy=legacy,
                            engine_images={"llamacpp": settings.llamacpp_image, "vllm": settings.vllm_image})
            self._booted.add(host.id)
        actions = plan([view(m) for m in rows], containers, healthy, utcnow(), boot=boot_ctx,
                       instance=rt.instance, elsewhere=elsewhere)
        if host.id in self.interrupted:  # deaths this pass finds are the engine's doing: say so
            why = "the Docker Engine restarted; " if local else f"host {host.name}'s engine was away meanwhile; "
            actions = [dataclasses.replace(a, reason=a.reason.replace("its container", why + "its container", 1))
                       if isinstance(a, FailModel) else a for a in actions]
        self.interrupted.discard(host.id)
        if not self.may_act():
            return []  # the console stops, or lost the lease, while this share listed
        launched = self._launch(rt, actions, report, generations)
        report.host_durations[host.id] = time.perf_counter() - t0
        return launched

    def _launch(self, rt: DockerRuntime, actions: list, report: PassReport, generations: dict) -> list[asyncio.Future]:
        groups: dict[Hashable, list] = {}
        for action in actions:
            groups.setdefault(subject(action), []).append(action)
        launched, again = [], False
        for key, group in groups.items():
            with self._busy_lock:
                busy = key in self._busy
                if busy or self._generation.get(key, 0) != generations.get(key, 0):
                    # Still at work, or done since this pass read: its plan may be stale.
                    if busy:
                        self._waiting.add(key)
                    again = again or not busy
                    report.deferred += len(group)
                    continue
                self._busy.add(key)
            task = asyncio.ensure_future(self._run_group(rt, key, group, report))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            launched.append(task)
        if again and self.on_subject_free is not None:
            self.on_subject_free()  # a fresh look at what ended while this pass read
        return launched

    async def _run_group(self, rt: DockerRuntime, key: Hashable, group: list, report: PassReport) -> None:
        loop = asyncio.get_running_loop()
        try:
            for action in group:
                try:
                    await loop.run_in_executor(self._pool, self.apply, action, rt)
                    report.actions.append(action)
                except Refused:
                    pass  # the row moved on since we read it; the next pass looks again
                except Exception as exc:  # noqa: BLE001 - one bad model never stops the pass
                    log.warning("reconcile: %s failed for model %s: %s", type(action).__name__,
                                getattr(action, "model_id", "?"), exc)
                    report.failures.append((action, str(exc)))
        finally:
            with self._busy_lock:
                self._busy.discard(key)
                self._generation[key] = self._generation.get(key, 0) + 1
                wanted = key in self._waiting
                self._waiting.discard(key)
            if wanted and self.on_subject_free is not None:
                self.on_subject_free()

    async def drain(self, timeout: float) -> None:
        """Wait until no action of any pass is running (console shutdown; `may_act` is false by
        then, so a host's share still listing launches nothing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._busy_lock:
                if not self._busy:
                    return
            await asyncio.sleep(0.02)

    def _engine_flip(self, up: bool, reason: str) -> None:
        """engine.unreachable / engine.reachable webhooks, once per change (not at the first pass
        of a healthy engine)."""
        was, self.engine_up = self.engine_up, up
        if was is None and up or was == up:
            return
        webhooks.enqueue_system(self.lc.db, "engine.reachable" if up else "engine.unreachable", reason,
                                self.lc.settings.public_url)

    def _host_flip(self, host: Host, up: bool, reason: str) -> None:
        """A host stopped answering (or answers again): each of its loading or running models
        keeps its state, its health becomes unknown (its probes wait for the host), and its
        history says so, once per change."""
        with self._health_lock:
            was, self.hosts_up[host.id] = self.hosts_up.get(host.id), up
            if was == up or was is None and up:
                return
            self._host_flipped_at[host.id] = time.monotonic()
            self._record_flip(host, up, reason)

    def _record_flip(self, host: Host, up: bool, reason: str) -> None:
        if up:
            self.lc.record_host_change(host.id, f"host {host.name} answers again: its state is checked now",
                                       actor=ACTOR)
        else:
            self.lc.record_host_change(host.id, f"host {host.name} unreachable ({reason}): state kept, health "
                                       "unknown until it answers", actor=ACTOR, health=Health.UNKNOWN,
                                       consecutive_failures=0)

    # --- applying one action (in a worker thread) ------------------------------------------

    def apply(self, action, rt: Optional[DockerRuntime] = None) -> None:
        """Carry out one action on the engine of `rt` (the host it was planned for; host 1's
        by default)."""
        lc = self.lc
        rt = rt or self.runtime
        if isinstance(action, MarkRunning):
            m = lc.get(action.model_id)
            now = utcnow()
            took = (now - m.started_at).total_seconds() if m.started_at else None
            lc.transition(m.id, S.RUNNING, reason=action.reason, actor=ACTOR, allowed_from=(S.LOADING,),
                          expect_container=action.container_id,
                          ready_at=now, load_seconds=took if m.ready_at is None else m.load_seconds)
        elif isinstance(action, FailModel):
            self._fail(action, rt)
        elif isinstance(action, RemoveContainer):
            self._remove(action, rt)
        elif isinstance(action, LeaveAlone):
            log.warning("reconcile: container %s (%s) %s", action.name, action.container_id[:12], action.reason)
            journal.record(lc.db, "container.left-alone", action.name, action.reason)
        elif isinstance(action, MarkStopped):
            lc.transition(action.model_id, S.STOPPED, reason=action.reason, actor=ACTOR,
                          allowed_from=(action.expect,), expect_changed_at=action.changed_at,
                          host_port=None, container_id=None, stopped_at=utcnow())
        elif isinstance(action, RestartModel):
            # Only from `failed`, once due, and only the attempt planned: an admin who stopped it
            # meanwhile has the last word, and a restart already made is not made twice.
            m = lc.get(action.model_id)
            if (m.state != S.FAILED or m.restart_attempts != action.attempt - 1 or m.next_restart_at is None
                    or m.next_restart_at > utcnow()):
                raise Refused(f"model {m.name} is no longer due for restart {action.attempt}")
            try:
                lc.start(action.model_id, actor=RESTART_ACTOR, allowed_from=(S.FAILED,),
                         restart_attempt=action.attempt,
                         reason=f"restart on failure, attempt {action.attempt}/{action.of}")
            except DoesNotFit as exc:
                # Not retried: the GPUs' memory is taken; an admin decides (Start anyway).
                lc.transition(action.model_id, S.FAILED, reason=f"restart {action.attempt}/{action.of} refused: "
                              f"{exc}", actor=RESTART_ACTOR, allowed_from=(S.FAILED,), next_restart_at=None)
        elif isinstance(action, ResetRestarts):
            with Session(lc.db) as session:  # only while it still runs
                session.execute(Model.__table__.update().where(
                    Model.id == action.model_id, Model.state == S.RUNNING, Model.restart_attempts > 0)
                    .values(restart_attempts=0))
                session.commit()

    def _fail(self, a: FailModel, rt: DockerRuntime) -> None:
        m = self.lc.get(a.model_id)
        if m.state != a.expect or m.container_id != a.row_container:
            return  # the row moved on since the plan (ready, stopped, restarted): not ours to fail
        if a.container_missing:
            info = rt.inspect(m.container_id) if m.container_id else None
            died = self._recent_deaths()
            if info is not None and info.running and info.id not in died:
                return  # the list was older than the row: the container is fine
            if info is not None:
                why = exit_reason(overlay_deaths([info], died)[0])
                a = dataclasses.replace(a, reason=a.reason.replace("its container is gone", why), container_id=info.id,
                                        container_missing=False, container_running=False)
        fields = dict(host_port=None, container_id=None, stopped_at=utcnow(), next_restart_at=a.next_restart_at)
        if a.container_id and a.container_running:
            # It still serves: stop it (gracefully) before the row says it is gone.
            logs = rt.logs_tail(a.container_id, LOG_LINES_KEPT)
            rt.stop_and_remove(a.container_id, timeout=STOP_TIMEOUT_S)
            self.lc.transition(a.model_id, S.FAILED, reason=a.reason, actor=ACTOR, allowed_from=(a.expect,),
                               expect_container=a.row_container, log_tail=logs or None, **fields)
            return
        # Dead (or paused): the row tells the truth at once; the last lines are kept right
        # after (reading them waits until the engine has finished tearing the container down).
        event_id = self.lc.transition(a.model_id, S.FAILED, reason=a.reason, actor=ACTOR, allowed_from=(a.expect,),
                                      expect_container=a.row_container, **fields)
        if a.container_id:
            logs = rt.logs_tail(a.container_id, LOG_LINES_KEPT)
            if logs:
                self.lc.keep_failure_logs(event_id, logs)
            # Its model failed: no grace. A paused one resumed for a SIGTERM would run on for
            # the grace, and whoever paused it may pause it again meanwhile (chaos seed 981876:
            # a container paused, resumed and paused again by hand while this ran was removed
            # 1.05 s after its row said failed; its removal now begins 0.25 s sooner).
            rt.discard(a.container_id, grace_s=0)

    def _remove(self, a: RemoveContainer, rt: DockerRuntime) -> None:
        if not rt.discard(a.container_id):
            return  # already gone
        if a.model_id is None:
            log.warning("reconcile: %s (container %s, %s)", a.reason, a.container_id[:12], a.model_name)
            journal.record(self.lc.db, "container.removed", a.model_name or a.container_id[:12], a.reason)
            return
        try:
            m = self.lc.get(a.model_id)
            name, state = m.name, m.state
        except LookupError:  # a deleted row: the history still gets the event
            name, state = (a.model_name or "?")[:64], S.STOPPED
        self.lc.record(a.model_id, name, state, kind=EventKind.CONTAINER, reason=a.reason, actor=ACTOR)

    # --- loading models (the scheduler's loading watcher) ----------------------------------

    def loading_targets(self) -> list[LoadingTarget]:
        """Every loading model and where its /health answers (one narrow query)."""
        with Session(self.lc.db) as session:
            rows = session.exec(select(Model.id, Model.engine, Model.container_id, Model.host_port, Model.host_id,
                                       Model.started_at, Model.startup_timeout_s).where(Model.state == S.LOADING)).all()
        return [LoadingTarget(mid, self.lc.health_url_of(engine, cid, port, host_id), started, timeout)
                for mid, engine, cid, port, host_id, started, timeout in rows]

    # --- health probes of running models ------------------------------------------------

    async def probe_running(self) -> int:
        """One round of probes over every running model; writes health, flips with events."""
        began = time.monotonic()
        away = self.unreachable  # their models' health is unknown until their host answers
        targets = {m.id: (m, url) for m in await asyncio.to_thread(self.rows)
                   if m.state == S.RUNNING and m.host_id not in away and (url := self.lc.health_url(m))}
        rows = [m for m, _ in targets.values()]
        results = await probe_many([(mid, url) for mid, (_, url) in targets.items()], timeout=self.probe_timeout,
                                   tls=self.lc.tls_for(url for _, url in targets.values()))
        await asyncio.to_thread(self._write_health, rows, results, began)
        return len(results)

    async def note_failed_probe(self, model_id: int, container_id: Optional[str], error: str,
                                seen_at: Optional[float] = None) -> None:
        """Someone else found the model unreachable (the gateway: its connection refused twice,
        at `seen_at`, monotonic): counted as one failed probe of that container, toward
        `unhealthy`, unless its host went away or came back since."""
        began = time.monotonic() if seen_at is None else seen_at
        def write() -> None:
            with Session(self.lc.db) as session:
                row = session.get(Model, model_id)
            if row is not None and row.state == S.RUNNING and row.container_id == container_id:
                self._write_health([row], {model_id: ProbeResult(model_id, False, None, error=error[:200])}, began)
        await asyncio.to_thread(write)

    def _write_health(self, rows: list[Model], results: dict, began: float) -> None:
        """Each probe's verdict, unless its host went away or came back after the probe began
        (`began`, monotonic): a host that went silent mid-round keeps the `unknown` its flip
        wrote until a probe that began after its return says otherwise."""
        now = utcnow()
        for m in rows:
            r = results.get(m.id)
            if r is None:
                continue
            with self._health_lock:
                if self._host_flipped_at.get(m.host_id, -math.inf) >= began or m.host_id in self.unreachable:
                    continue
                self._write_one(m, r, now)

    def _write_one(self, m: Model, r: ProbeResult, now) -> None:
        u = health_update(m.health, m.consecutive_failures, m.probe_history, r, now.timestamp(),
                          self.lc.settings.unhealthy_after)
        fields = dict(health=u.health, consecutive_failures=u.consecutive_failures,
                      probe_latency_ms=u.latency_ms, probe_history=u.history, last_probe_at=now)
        try:
            with Session(self.lc.db) as session:
                # Only if it is still the same running container: a model stopped or
                # restarted during the round gets no stale health, and no false alert.
                written = session.execute(Model.__table__.update().where(
                    Model.id == m.id, Model.state == S.RUNNING, Model.container_id == m.container_id,
                ).values(**fields)).rowcount
                session.commit()
            if written and u.flipped:
                self.lc.record(m.id, m.name, S.RUNNING, kind=EventKind.HEALTH, reason=u.flipped, actor=ACTOR)
        except Exception as exc:  # noqa: BLE001 - one model's write never stops the round
            log.warning("probe: could not record health of model %s: %s", m.name, exc)

    # --- console stop -------------------------------------------------------------------

    def shutdown_models(self) -> int:
        """Default policy on graceful shutdown: stop and remove every model container, on every
        host, so no model outlives the console that an admin would have to find and stop by
        hand. All at once, each host on its own: Docker gives the console 10 s in all, not 10 s
        per model, and a slow host never holds up this one's. A host that does not answer
        keeps its containers (restart policy `no`): the next console's first pass there
        removes them."""
        away = self.unreachable
        active = [m for m in self.rows() if m.state in (S.LOADING, S.RUNNING) and m.host_id not in away]
        reachable = [h for h in hosts.list_hosts(self.lc.db) if h.id not in away]

        def stop(m: Model) -> bool:
            try:
                self.lc.stop(m.id, actor="console", reason="console shutting down")
                return True
            except (Refused, DockerRuntimeError, LookupError) as exc:
                log.warning("shutdown: could not stop model %s: %s", m.name, exc)
                return False

        def one_host(host: Host) -> int:
            mine = [m for m in active if m.host_id == host.id]
            with ThreadPoolExecutor(max_workers=min(16, max(1, len(mine)))) as pool:
                stopped = sum(pool.map(stop, mine))
            try:  # anything else (a start cut short, a stray) nobody asked for: a short grace, then gone
                rt = self.lc.runtimes.of(host)
                for c in of_host(rt.list_managed(), host.id):
                    rt.discard(c.id)
            except DockerRuntimeError as exc:
                log.warning("shutdown: could not clear host %s: %s", host.name, exc)
            return stopped

        with ThreadPoolExecutor(max_workers=max(1, len(reachable))) as pool:
            return sum(pool.map(one_host, reachable))
