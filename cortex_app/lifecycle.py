"""Start / stop / apply / delete a model: compare-and-set on the row, then the runtime,
then an event, always in that order.

Every state change goes through `transition()`, which writes the new state, the reason and
an event row in one transaction, and only if the row is still in the state the caller saw
(so two concurrent Starts create exactly one container). Docker calls block: async callers
run these methods with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from typing import Callable, Collection, Iterable, Optional

import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app import crud, fit, hosting, placement, webhooks
from cortex_app.engines import CONTAINER_PORTS, build_spec, memory
from cortex_app.engines.vllm_memory import VllmEstimate
from cortex_app.engines.spec import PUBLISH_HOST
from cortex_app.hosting import Placement, PlacementError
from cortex_app.hosts import LOCAL_HOST_ID, get_host
from cortex_app.ingress import nginx
from cortex_app.ingress.keeper import Ingresses
from cortex_app.models import EventKind, Host, Model, ModelEvent, ModelState, utcnow
from cortex_app.reconcile.plan import restart_decision
from cortex_app.runtime.docker import ContainerConflict, DockerRuntime, DockerRuntimeError
from cortex_app.runtime.gpu import GpuStatus, read_gpus
from cortex_app.runtimes import HostRuntimes
from cortex_app.settings import Settings

log = logging.getLogger(__name__)

S = ModelState
STARTABLE = (S.STOPPED, S.FAILED)
STOPPABLE = (S.LOADING, S.RUNNING, S.FAILED)
LOG_LINES_KEPT = 100
STOP_TIMEOUT_S = 10
RESTART_ACTOR = "reconciler:restart-on-failure"
NAME_FREED_WITHIN_S = 5.0
ANY = object()  # transition(): no expectation about the row's container


class Refused(Exception):
    """The operation is not allowed in the model's current state; nothing was changed."""


class DoesNotFit(Refused):
    """Start refused: the model's memory estimate exceeds what its GPUs have free (the message
    has the numbers). An admin may start it anyway, once (`override_fit`)."""


def free_host_port(held: Collection[int], interface: str = PUBLISH_HOST) -> int:
    """A port the OS says is free on `interface` right now, and no model holds."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6 if ":" in interface else socket.AF_INET) as s:
            s.bind((interface, 0))
            port = s.getsockname()[1]
        if port not in held:
            return port
    raise RuntimeError("no free host port found")


def _estimated_use(estimate, verdict: Optional[fit.Fit]) -> Optional[float]:
    """What the model is expected to hold once running, to set beside what it does hold: for
    vLLM its claim on its GPUs (known only with their sizes), else the estimate itself."""
    if estimate is None:
        return None
    if isinstance(estimate, VllmEstimate):
        return round(verdict.need_mib, 1) if verdict is not None and verdict.need_mib else None
    return round(estimate.total_mib, 1)


def _no_remote_gpus(host_id: int) -> GpuStatus:
    return GpuStatus(available=False, notice="no GPU readings from that host")


class Lifecycle:
    def __init__(self, db: sa.Engine, runtime: DockerRuntime, settings: Settings,
                 gpu_status: Callable[[], GpuStatus] = read_gpus, runtimes: Optional[HostRuntimes] = None,
                 ingresses: Optional[Ingresses] = None):
        self.db = db
        self.runtime = runtime  # host 1's: the console's own DOCKER_HOST
        self.runtimes = runtimes or HostRuntimes(db, settings, runtime)  # every host's (runtimes.py)
        # Other hosts' ingresses (cortex_app/ingress): the one way to their models.
        self.ingresses = ingresses or Ingresses(db, settings, self.runtimes)
        self.settings = settings
        self.gpu_status = gpu_status  # this host's GPUs now (NVML), for the fit check at Start
        # Another host's GPUs now (its sampler's readings, gpu_samplers.py; the scheduler wires it).
        self.remote_gpu_status: Callable[[int], GpuStatus] = _no_remote_gpus
        # Told (model id, new state) after every committed state change, from the thread that
        # made it: the scheduler's loading watcher wakes on `loading`.
        self.listeners: list[Callable[[int, ModelState], None]] = []
        self._placement: Optional[Placement] = None
        self._placement_lock = threading.Lock()
        self._placement_error: Optional[str] = None
        self._remote_placements: dict[int, Placement] = {}  # other hosts': from their rows only
        self._placing = threading.Lock()

    # --- how model containers are wired to this console (hosting.py) -----------------------

    def runtime_of(self, model: Model) -> DockerRuntime:
        """The runtime of the host the model belongs to."""
        return self.runtimes.get(model.host_id)

    def note_hosts(self, rows: list[Host]) -> None:
        """How every remote host's models are reached, from the hosts' rows (never the engines):
        the reconcile pass refreshes it, so probes and the gateway know every model's address."""
        found = {}
        for h in rows:
            if h.id != LOCAL_HOST_ID and h.endpoint is not None:
                try:
                    found[h.id] = self._remote_placement(h)
                except PlacementError:
                    pass
        self._remote_placements = found

    def _remote_placement(self, host: Host) -> Placement:
        return hosting.remote(self.settings, address=host.address or "", models_dir=host.models_dir,
                              hf_cache_dir=host.hf_cache_dir, network=self.ingresses.network)

    def placement(self, host_id: Optional[int] = None) -> Placement:
        """How a host's model containers are wired. Host 1's is worked out on first need (it asks
        the engine), then kept; raises PlacementError or DockerRuntimeError, keeping nothing, so
        the next call tries again. Another host's comes from its row."""
        if host_id not in (None, LOCAL_HOST_ID):
            placement = self._remote_placement(get_host(self.db, host_id))
            self._remote_placements[host_id] = placement
            return placement
        with self._placement_lock:
            if self._placement is None:
                self._placement = hosting.resolve(self.settings, self.runtime)
                self._placement_error = None
                log.info("placement: %s", self._placement.describe())
            return self._placement

    @property
    def placement_problem(self) -> Optional[str]:
        """Why the last try to work out the placement failed (None once it succeeded)."""
        return self._placement_error

    def try_placement(self) -> Optional[Placement]:
        """The placement, or None (logged once per distinct reason) when it cannot be had now."""
        try:
            return self.placement()
        except (PlacementError, DockerRuntimeError) as exc:
            if str(exc) != self._placement_error:
                self._placement_error = str(exc)
                log.warning("cannot wire model containers to this console: %s", exc)
            return None

    # --- the one way a state changes --------------------------------------------------

    def transition(self, model_id: int, to: ModelState, *, reason: str, actor: str,
                   allowed_from: Collection[ModelState], log_tail: Optional[str] = None,
                   expect_container: object = ANY, expect_changed_at: object = ANY, expect_host: object = ANY,
                   **fields) -> int:
        """Move the model to `to` if its state is in `allowed_from`; write the event in the same
        transaction. Returns the event's id; raises Refused if it was in no allowed state (or
        another writer changed it between our read and our write). With `expect_container`,
        the row must also still name that container: a decision about one container never
        lands on the row of the next one. With `expect_changed_at`, its state must not have
        changed since then (a decision about one `starting` never lands on the next). With
        `expect_host`, it must still belong to that host, which must still exist (a start never
        lands on a row moved, nor on a host removed, meanwhile)."""
        with Session(self.db) as session:
            row = session.exec(select(Model.state, Model.name, Model.served_name, Model.engine)
                               .where(Model.id == model_id)).first()
            if row is None:
                raise LookupError(f"no model with id {model_id}")
            current, name, served_name, engine = row
            if current not in allowed_from:
                raise Refused(f"model {name} is {current.value}; cannot move it to {to.value}")
            now = utcnow()
            where = [Model.id == model_id, Model.state == current]
            if expect_container is not ANY:
                where.append(Model.container_id.is_(None) if expect_container is None
                             else Model.container_id == expect_container)
            if expect_changed_at is not ANY:
                where.append(Model.state_changed_at.is_(None) if expect_changed_at is None
                             else Model.state_changed_at == expect_changed_at)
            if expect_host is not ANY:
                where.append(Model.host_id == expect_host)
                where.append(sa.exists().where(Host.id == fields.get("host_id", expect_host)))
            result = session.execute(
                sa.update(Model).where(*where)
                .values(state=to, state_reason=reason, updated_at=now, state_changed_at=now, **fields))
            if result.rowcount != 1:  # lost the race: someone moved it after our read
                session.rollback()
                raise Refused(f"model {name} changed state meanwhile; try again")
            event = ModelEvent(model_id=model_id, model_name=name, from_state=current, to_state=to,
                               reason=reason, actor=actor, log_tail=log_tail, created_at=now)
            session.add(event)
            queued = self._outbox(session, EventKind.STATE, model_id, name, served_name, engine, current, to,
                                  reason, now)
            session.commit()
            event_id = event.id
        if queued:
            webhooks.wake()
        for listener in self.listeners:
            try:
                listener(model_id, to)
            except Exception as exc:  # noqa: BLE001 - the change is committed; a listener never undoes it
                log.warning("state listener failed for model %s: %s", name, exc)
        log.info("model %s: %s -> %s (%s) by %s", name, current.value, to.value, reason, actor)
        return event_id

    def record_memory_used(self, model_id: int, container_id: str, used_mib: float) -> None:
        """The most memory the model held in this run (its container's): kept only if higher."""
        with Session(self.db) as session:
            session.execute(sa.update(Model).where(
                Model.id == model_id, Model.container_id == container_id,
                sa.or_(Model.memory_used_mib.is_(None), Model.memory_used_mib < used_mib))
                .values(memory_used_mib=used_mib))
            session.commit()

    def keep_failure_logs(self, event_id: int, log_tail: str) -> None:
        """Attach a container's last lines to its `failed` event, when they could only be read
        after the row was marked failed (see the reconciler's FailModel)."""
        with Session(self.db) as session:
            session.execute(sa.update(ModelEvent).where(ModelEvent.id == event_id, ModelEvent.log_tail.is_(None))
                            .values(log_tail=log_tail))
            session.commit()

    def record(self, model_id: int, model_name: str, state: ModelState, *, kind: EventKind, reason: str,
               actor: str, log_tail: Optional[str] = None, **fields) -> None:
        """An event that changes no state (health flips, a foreign container removed), with
        optional column updates in the same transaction."""
        with Session(self.db) as session:
            if fields:
                session.execute(sa.update(Model).where(Model.id == model_id).values(**fields))
            session.add(ModelEvent(model_id=model_id, model_name=model_name, from_state=state, to_state=state,
                                   kind=kind, reason=reason, actor=actor, log_tail=log_tail))
            row = session.exec(select(Model.served_name, Model.engine).where(Model.id == model_id)).first()
            queued = row is not None and self._outbox(session, kind, model_id, model_name, row[0], row[1], state,
                                                      state, reason, utcnow())
            session.commit()
        if queued:
            webhooks.wake()
        log.info("model %s: %s (%s) by %s", model_name, kind.value, reason, actor)

    def record_host_change(self, host_id: int, reason: str, *, actor: str, **fields) -> int:
        """Its host stopped answering, or answers again: one event for each of its loading or
        running models (their states unchanged; `fields` written on them), in one transaction
        however many there are. No webhook per model: the host's own says it (hosts.py)."""
        with Session(self.db) as session:
            active = session.exec(select(Model.id, Model.name, Model.state).where(
                Model.host_id == host_id, Model.state.in_((S.LOADING, S.RUNNING)))).all()
            if fields and active:
                session.execute(sa.update(Model).where(Model.id.in_([mid for mid, _, _ in active])).values(**fields))
            now = utcnow()
            session.add_all([ModelEvent(model_id=mid, model_name=name, from_state=state, to_state=state,
                                        kind=EventKind.HOST, reason=reason, actor=actor, created_at=now)
                             for mid, name, state in active])
            session.commit()
        if active:
            log.info("host %s: %d model(s): %s", host_id, len(active), reason)
        return len(active)

    def _outbox(self, session: Session, kind: EventKind, model_id: int, name: str, served_name: str, engine,
                previous: ModelState, state: ModelState, reason: str, at) -> int:
        """The webhook deliveries this event causes, in the same transaction as the event."""
        event_type = webhooks.event_type_for(kind, state, reason)
        if event_type is None:
            return 0
        data = webhooks.model_event_data(model_id=model_id, name=name, served_name=served_name,
                                         engine=getattr(engine, "value", engine), previous=previous, state=state,
                                         reason=reason, public_url=self.settings.public_url)
        return webhooks.enqueue(session, event_type, data, model_id=model_id, at=at)

    def get(self, model_id: int) -> Model:
        """The row as it is now (LookupError if deleted): re-read before acting on it."""
        model = crud.get_model(self.db, model_id)
        if model is None:
            raise LookupError(f"no model with id {model_id}")
        return model

    # --- start --------------------------------------------------------------------------

    def estimate(self, model: Model):
        """The model's memory estimate (engines/memory.py), or None when there is none."""
        try:
            return memory.estimate_model(model, self.settings.models_dir, self.settings.hf_cache_dir)
        except ValueError:
            return None

    def fit_check(self, model: Model, estimate=None, freed_mib: float = 0.0) -> Optional[fit.Fit]:
        """Whether a model on GPUs fits in what they have free now; None where that cannot be
        said (a CPU model, no estimate, no GPU readings). Models still starting or loading on
        those GPUs have not allocated yet: what their estimates say they will still take is
        counted as taken. `freed_mib`: what this model's own running container will give back
        (Apply restarts it)."""
        estimate = estimate or self.estimate(model)
        if model.device.value != "cuda" or estimate is None or not getattr(estimate, "on_gpu", True):
            return None
        status = self.gpu_status() if model.host_id == LOCAL_HOST_ID else self.remote_gpu_status(model.host_id)
        if not status.available or not status.gpus:
            return None
        free = {g.index: float(g.memory_total_mib - g.memory_used_mib) for g in status.gpus}
        with Session(self.db) as session:
            pending = session.exec(select(Model.gpu_ids, Model.memory_estimate_mib, Model.memory_used_mib).where(
                Model.id != model.id, Model.host_id == model.host_id, Model.device == model.device,
                Model.state.in_((S.STARTING, S.LOADING)))).all()
        for gpu_ids, estimated, used in pending:
            share = [i for i in free if gpu_ids is None or i in gpu_ids]
            for i in share:
                free[i] -= max(0.0, (estimated or 0.0) - (used or 0.0)) / len(share)
        own = [i for i in free if model.gpu_ids is None or i in model.gpu_ids]
        for i in own:
            free[i] += freed_mib / len(own)
        rooms = [fit.GpuRoom(g.index, g.name, g.memory_total_mib, int(max(0.0, free[g.index]))) for g in status.gpus]
        return fit.fit(estimate, rooms, model.gpu_ids)

    def start(self, model_id: int, *, actor: str, reason: str = "start requested",
              allowed_from: Collection[ModelState] = STARTABLE, restart_attempt: Optional[int] = None,
              override_fit: bool = False, keep_host: bool = False) -> Model:
        """stopped|failed -> starting -> loading: the container exists and runs. Readiness
        (loading -> running) is the reconciler's to see. A Docker failure ends
        `failed`, with nothing left behind. A start by anyone but the reconciler's restart
        policy begins a fresh count of restart attempts. A model on GPUs whose estimate exceeds
        their free memory is refused (DoesNotFit, nothing changed) unless `override_fit`. An
        `auto` model is placed first (placement.py), unless `keep_host` (Apply restarts it
        where it ran)."""
        model = self.get(model_id)
        if model.state not in allowed_from:
            raise Refused(f"model {model.name} is {model.state.value}; only a stopped or failed model can start")
        estimate = self.estimate(model)
        read_host = model.host_id
        placing = model.auto_host and not keep_host
        # Auto starts in this process place one at a time: each counts the ones placed before it
        # (they are `starting`, holding their estimate) instead of all picking the same room.
        with self._placing if placing else contextlib.nullcontext():
            if placing:
                model.host_id = self._place(model, estimate, override_fit)  # written with `starting` below
            verdict = self.fit_check(model, estimate)
            if verdict is not None and not verdict.ok and not override_fit:
                raise DoesNotFit(f"model {model.name} does not fit: {verdict.reason}. Start it anyway to override "
                                 "this once.")
            if verdict is not None and not verdict.ok:
                reason += f" (fit check overridden: {verdict.reason})"
            if placing:
                reason += f" (placed on host {get_host(self.db, model.host_id).name})"
            # An admin's start begins a fresh count; the restart policy's counts this attempt.
            restarts = {"restart_attempts": restart_attempt or 0, "next_restart_at": None}
            self.transition(model_id, S.STARTING, reason=reason, actor=actor, allowed_from=allowed_from,
                            expect_host=read_host, host_id=model.host_id, spec_hash=None, container_id=None,
                            started_at=utcnow(), ready_at=None, stopped_at=None, load_seconds=None, health="unknown",
                            consecutive_failures=0, memory_estimate_mib=_estimated_use(estimate, verdict),
                            memory_used_mib=None, **restarts)
        try:
            rt = self.runtime_of(model)
            placement = self.placement(model.host_id)
            spec = build_spec(model, self.settings, placement)
            if placement.reach is None:
                # Bind mounts need their folders to exist (the console sees them at its own paths).
                self.settings.models_dir.mkdir(parents=True, exist_ok=True)
                self.settings.hf_cache_dir.mkdir(parents=True, exist_ok=True)
            else:
                # Its host's ingress first (and the network it shares with its models): the only
                # way the console, and nothing else, reaches it there.
                self.ingresses.ensure(get_host(self.db, model.host_id))
            if placement.publish_host is None:
                port = None
            elif placement.probe_by_name:
                port = None  # the console cannot see the host's ports: the engine picks; read back below
            else:
                port = self._claim_port(model_id, model.host_id, placement.publish_host)
            info = self._create_and_start(rt, model_id, spec, port, placement.publish_host)
            if placement.publish_host is not None and port is None:
                try:
                    port = rt.published_port(info.id, spec.container_port)
                except DockerRuntimeError:
                    rt.remove(info.id)  # keep the promise below: nothing left behind
                    raise
        except (DockerRuntimeError, PlacementError, RuntimeError, OSError, LookupError) as exc:
            # No container is left: create_and_start removes what it made when start fails.
            suffix, next_restart_at = (restart_decision(model.restart_on_failure, restart_attempt,
                                                        model.restart_max_attempts, utcnow())
                                       if restart_attempt is not None else ("", None))
            self.transition(model_id, S.FAILED, reason=f"could not start: {exc}{suffix}", actor=actor,
                            allowed_from=(S.STARTING,), host_port=None, container_id=None, stopped_at=utcnow(),
                            next_restart_at=next_restart_at)
            return self.get(model_id)
        try:
            self.transition(model_id, S.LOADING, reason="container started; waiting for /health", actor=actor,
                            allowed_from=(S.STARTING,), container_id=info.id, spec_hash=spec.spec_hash,
                            host_port=port)
        except Refused:
            # Only a reconciler acting on a stuck row can get here; never leave its container.
            rt.remove(info.id)
            raise
        except sa.exc.SQLAlchemyError as exc:  # e.g. the engine-picked port still on a stale row
            rt.remove(info.id)
            self.transition(model_id, S.FAILED, reason=f"could not record the started container: "
                            f"{str(exc).splitlines()[0][:200]}", actor=actor, allowed_from=(S.STARTING,),
                            host_port=None, container_id=None, stopped_at=utcnow())
        return self.get(model_id)

    def _place(self, model: Model, estimate, override_fit: bool) -> int:
        """`auto`: the host this start goes to (placement.py), among those the hosts job last
        found reachable; DoesNotFit when none has room (an admin may override)."""
        on_gpu = (model.device.value == "cuda" and estimate is not None and getattr(estimate, "on_gpu", True))
        with Session(self.db) as session:
            rows = session.exec(select(Host).where(sa.or_(Host.id == LOCAL_HOST_ID, Host.reachable.is_(True)))
                                .order_by(Host.id)).all()
            active = dict(session.exec(select(Model.host_id, sa.func.count()).where(
                Model.id != model.id, Model.state.in_((S.STARTING, S.LOADING, S.RUNNING))).group_by(Model.host_id)).all())
        candidates, own = [], model.host_id
        try:
            for h in rows:
                model.host_id = h.id  # this row's copy, as if it were there
                verdict = self.fit_check(model, estimate) if on_gpu else None
                candidates.append(placement.Candidate(h.id, h.name, verdict, active.get(h.id, 0)))
        finally:
            model.host_id = own
        try:
            return placement.choose(candidates, on_gpu, override_fit).host_id
        except placement.NoRoom as exc:
            if override_fit:
                return own  # nothing can be read anywhere: where it ran last
            raise DoesNotFit(f"model {model.name} has no host to start on: {exc}. Start it anyway to override "
                             "this once.") from None

    def _create_and_start(self, rt: DockerRuntime, model_id: int, spec, port: Optional[int],
                          publish_host: Optional[str]):
        """Create and start the container. A leftover of this model holding its name (a dead
        container the reconciler is about to remove, a hand-started one) is removed first: the
        row is `starting`, so no container of this model is one an admin asked for."""
        try:
            return rt.create_and_start(spec, port, publish_host)
        except ContainerConflict:
            leftovers = [c for c in rt.list_managed(model_id=model_id) if c.name == spec.name]
            if not leftovers:
                raise
            for c in leftovers:
                rt.discard(c.id)
        # The name is free once the engine has finished removing it (it may be mid-removal by
        # the reconciler): a few quick tries.
        deadline = time.monotonic() + NAME_FREED_WITHIN_S
        while True:
            try:
                return rt.create_and_start(spec, port, publish_host)
            except ContainerConflict:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _claim_port(self, model_id: int, host_id: int, interface: str = PUBLISH_HOST) -> int:
        """Write a free port of this machine on the row. The unique constraint on (host,
        host_port) settles a race between two models picking the same port: the loser picks
        again."""
        for _ in range(20):
            with Session(self.db) as session:
                held = set(session.exec(select(Model.host_port).where(Model.host_id == host_id,
                                                                      Model.host_port.is_not(None))).all())
                port = free_host_port(held, interface)
                try:
                    session.execute(sa.update(Model).where(Model.id == model_id).values(host_port=port))
                    session.commit()
                    return port
                except sa.exc.IntegrityError:
                    session.rollback()
        raise RuntimeError("could not claim a free host port")

    def base_url(self, model: Model) -> Optional[str]:
        return self.base_url_of(model.engine, model.container_id, model.host_port, model.host_id)

    def tls_for(self, urls: Iterable[str]) -> Optional[ssl.SSLContext]:
        """The client context of other hosts' ingresses when any of `urls` is one (https://),
        else None (what probes and scrapes pass on: local models are plain http)."""
        return self.ingresses.tls() if any(u.startswith("https:") for u in urls) else None

    def health_url(self, model: Model) -> Optional[str]:
        return self.health_url_of(model.engine, model.container_id, model.host_port, model.host_id)

    def health_url_of(self, engine, container_id: Optional[str], host_port: Optional[int],
                      host_id: Optional[int] = None) -> Optional[str]:
        """Where the console reaches a model's /health (None: no address).

        Readiness is judged in one place only, the reconcile pass (loading -> running on a 200):
        whoever waits for a model to be ready waits for its row."""
        base = self.base_url_of(engine, container_id, host_port, host_id)
        return base and base + "/health"

    def base_url_of(self, engine, container_id: Optional[str], host_port: Optional[int],
                    host_id: Optional[int] = None) -> Optional[str]:
        """Where the console reaches a model's HTTP server (probes, scrapes, the gateway): on
        another host, through that host's ingress (TLS, the console's certificate), by the
        container's short id; here, by container id on the shared network when the console runs
        in a container, else on its published port (None: no address). Uses placements and
        ingress ports only once known (never asks an engine from here)."""
        if host_id not in (None, LOCAL_HOST_ID):
            remote = self._remote_placements.get(host_id)
            if remote is None:
                return None
            reach = '[' + remote.reach + ']' if ':' in remote.reach else remote.reach
            if host_port:
                # Started by a console before ingresses, on a port of its own: reached there
                # until its next start, which puts it behind the ingress.
                return f"http://{reach}:{host_port}"
            door = self.ingresses.port(host_id)
            if not container_id or door is None:
                return None
            return f"https://{reach}:{door}{nginx.model_path(container_id, CONTAINER_PORTS[engine])}"
        placement = self._placement
        if placement is not None and placement.probe_by_name:
            # By the container's short id, which the network resolves like its name, and
            # which, unlike the name, does not change when the model is renamed meanwhile.
            if not container_id:
                return None
            return f"http://{container_id[:12]}:{CONTAINER_PORTS[engine]}"
        if not host_port:
            return None
        host = placement.publish_host if placement and placement.publish_host else PUBLISH_HOST
        host = PUBLISH_HOST if host in ("0.0.0.0", "::") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{host_port}"

    # --- stop / apply / delete ----------------------------------------------------------

    def stop(self, model_id: int, *, actor: str, reason: str = "stop requested") -> Model:
        """loading|running|failed -> stopping -> stopped; the container is stopped (SIGTERM, then
        SIGKILL after the timeout) and removed. Already stopped: nothing happens."""
        model = self.get(model_id)
        if model.state == S.STOPPED:
            return model
        self.transition(model_id, S.STOPPING, reason=reason, actor=actor, allowed_from=STOPPABLE)
        try:
            rt = self.runtime_of(model)
            # Containers with this model's labels that it was not started with (forged, or left
            # over) get what the reconciler gives them: no graceful wait. Found by the chaos
            # harness: a forged one that ignored SIGTERM lived 10 s longer behind a stop.
            for cid in {c.id for c in rt.list_managed(model_id=model_id)} - {model.container_id}:
                rt.discard(cid)
            codes = ([rt.stop_and_remove(model.container_id, timeout=STOP_TIMEOUT_S)]
                     if model.container_id else [])
        except (DockerRuntimeError, LookupError) as exc:
            self.transition(model_id, S.FAILED, reason=f"could not stop: {exc}", actor=actor,
                            allowed_from=(S.STOPPING,))
            return self.get(model_id)
        done = "stopped" + (f" (exit code {codes[0]})" if len(codes) == 1 and codes[0] is not None else "")
        self.transition(model_id, S.STOPPED, reason=done, actor=actor, allowed_from=(S.STOPPING,),
                        host_port=None, container_id=None, stopped_at=utcnow())
        return self.get(model_id)

    def is_stale(self, model: Model) -> bool:
        """The running container was built from an older config than the row holds now."""
        if model.state not in (S.LOADING, S.RUNNING):
            return False
        # Only the placement already known (the reconcile pass works it out): the pages ask
        # per row and per tick, and must not wait on the engine, nor guess the wiring.
        placement = (self._placement if model.host_id == LOCAL_HOST_ID
                     else self._remote_placements.get(model.host_id))
        if placement is None:
            return False
        return model.spec_hash != build_spec(model, self.settings, placement).spec_hash

    def apply(self, model_id: int, *, actor: str, override_fit: bool = False) -> Model:
        """Restart a running model on its current config; readiness is the reconciler's to see.
        The fit check comes first, counting what the running container gives back: a config
        that no longer fits is refused (DoesNotFit) while the model still runs on the old one."""
        model = self.get(model_id)
        if model.state not in (S.LOADING, S.RUNNING):
            raise Refused(f"model {model.name} is {model.state.value}; its config applies at the next start")
        verdict = self.fit_check(model, freed_mib=model.memory_used_mib or model.memory_estimate_mib or 0.0)
        if verdict is not None and not verdict.ok and not override_fit:
            raise DoesNotFit(f"model {model.name} would not fit on its new config: {verdict.reason}. It keeps "
                             "running on the old one; apply anyway to override this once.")
        stopped = self.stop(model_id, actor=actor, reason="apply: restarting with the new config")
        if stopped.state != S.STOPPED:
            return stopped  # the old container could not be stopped: do not start a second one
        # Decided above, with the memory the old container held counted as free: right after
        # its stop the driver may not show it free yet.
        return self.start(model_id, actor=actor, override_fit=True, keep_host=True)

    def delete(self, model_id: int, *, actor: str) -> None:
        """Remove the row of a stopped or failed model; model files are never touched. The
        event names the state the row really left (compare-and-set on it, as transition does:
        a stop that lands between our read and our delete must not be misreported)."""
        for _ in range(5):
            with Session(self.db) as session:
                row = session.exec(select(Model.state, Model.name).where(Model.id == model_id)).first()
                if row is None:
                    raise LookupError(f"no model with id {model_id}")
                current, name = row
                if current not in STARTABLE:
                    raise Refused(f"model {name} is {current.value}; stop it before deleting it")
                result = session.execute(sa.delete(Model).where(Model.id == model_id, Model.state == current))
                if result.rowcount != 1:
                    session.rollback()
                    continue  # it moved meanwhile: look again
                session.add(ModelEvent(model_id=model_id, model_name=name, from_state=current,
                                       to_state=S.STOPPED, reason="model deleted", actor=actor))
                session.commit()
                return
        raise Refused(f"model {model_id} keeps changing state; try again")

    # --- logs -----------------------------------------------------------------------------

    def logs(self, model_id: int, lines: int = 200) -> str:
        """The container's last lines (read as a page reads: runtimes.page_reader); for a model
        without one, the lines kept when it failed."""
        model = self.get(model_id)
        if model.container_id:
            return self.runtimes.page_reader(model.host_id).logs_tail(model.container_id, lines)
        with Session(self.db) as session:
            kept = session.exec(select(ModelEvent.log_tail).where(
                ModelEvent.model_id == model_id, ModelEvent.log_tail.is_not(None))
                .order_by(ModelEvent.id.desc()).limit(1)).first()
        return "\n".join((kept or "").splitlines()[-lines:])

