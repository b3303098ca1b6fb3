"""Fixtures for tests that run the reconciler and its scheduler in-process against the
real engine: `bed` (lifecycle + reconciler on a fresh database; `bed.scheduler()` starts the
jobs on their own event loop, as the app's lifespan does)."""

import asyncio
import dataclasses
import threading
import time

import pytest
from sqlmodel import Session, select

from cortex_app import crud
from cortex_app.engines.spec import LABEL_MANAGED
from cortex_app.lifecycle import Lifecycle
from cortex_app.models import Model, ModelEvent, ModelState
from cortex_app.reconcile.leader import LeaderLease
from cortex_app.reconcile.loop import Reconciler
from cortex_app.reconcile.scheduler import ConsoleScheduler
from cortex_app.runtime.docker import DockerRuntime
from tests.conftest import LLAMA_IMAGE

S = ModelState
FAST_LLAMA = ["-t", "1", "--poll", "0"]


class SchedulerThread:
    """Runs a ConsoleScheduler on its own event loop, as the app's lifespan does."""

    def __init__(self, scheduler: ConsoleScheduler):
        self.scheduler = scheduler
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.scheduler.start(), self.loop).result(60)
        return self

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.scheduler.stop(), self.loop).result(120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def bed(migrated_db, bed_settings, docker_host, test_labels):
    """Lifecycle + reconciler on the test engine; `bed.scheduler(**settings)` starts the jobs."""
    yield from _bed(migrated_db, bed_settings, docker_host, test_labels)


@pytest.fixture
def own_bed(migrated_db, bed_settings, restartable_engine, test_labels):
    """The same, on an engine the test may restart or stop (`own_bed.engine`): never someone's own."""
    import dataclasses as dc

    import docker

    settings = dc.replace(bed_settings, docker_host=restartable_engine.host)
    for b in _bed(migrated_db, settings, restartable_engine.host, test_labels):
        b.engine = restartable_engine
        yield b
    restartable_engine.start()  # stopped by a test that failed half-way
    client = docker.DockerClient(base_url=restartable_engine.host, timeout=60)
    for c in client.containers.list(all=True, filters={"label": f"cortex.test={test_labels['cortex.test']}"}):
        c.remove(force=True)
    client.close()


def _bed(migrated_db, bed_settings, docker_host, test_labels):
    runtime = DockerRuntime(docker_host, extra_labels=test_labels)
    running: list[SchedulerThread] = []

    class Bed:
        db = migrated_db
        settings = bed_settings
        lc = Lifecycle(migrated_db, runtime, bed_settings)
        rec = Reconciler(lc)

        def start_ready(self, model_id, actor="admin:test", timeout=60) -> Model:
            return start_ready(self.rec, model_id, actor=actor, timeout=timeout)

        def scheduler(self, **overrides):
            settings = dataclasses.replace(bed_settings, **overrides)
            self.lc.settings = settings
            st = SchedulerThread(ConsoleScheduler(self.rec, LeaderLease(migrated_db, ttl_s=5), settings)).start()
            running.append(st)
            return st

        def llama(self, name="tiny", **kw):
            return crud.create_model(migrated_db, bed_settings, {
                "name": name, "engine": "llamacpp", "image": LLAMA_IMAGE, "source": "tiny.gguf",
                "extra_args": FAST_LLAMA, **kw})

        def row(self, model_id) -> Model:
            return crud.get_model(migrated_db, model_id)

        def events(self, model_id, kind=None):
            with Session(migrated_db) as s:
                q = select(ModelEvent).where(ModelEvent.model_id == model_id)
                if kind:
                    q = q.where(ModelEvent.kind == kind)
                return s.exec(q.order_by(ModelEvent.id)).all()

        def reconcile(self, boot=False):
            return asyncio.run(self.rec.reconcile_once(boot=boot))

    yield Bed()
    for st in running:
        if st.thread.is_alive():
            st.stop()
    runtime.close()


def settle(rec: Reconciler, model_id: int, timeout: float = 60) -> Model:
    """Wait for a loading model as the console does: reconcile passes, which alone judge
    readiness (and failures while loading), until its row leaves `loading`."""
    deadline = time.monotonic() + timeout
    while True:
        asyncio.run(rec.reconcile_once())
        m = crud.get_model(rec.lc.db, model_id)
        if m.state is not S.LOADING or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def start_ready(rec: Reconciler, model_id: int, actor: str = "admin:test", timeout: float = 60) -> Model:
    """An admin's Start, then the reconciler's passes until the row says how it went."""
    m = rec.lc.start(model_id, actor=actor)
    return settle(rec, model_id, timeout) if m.state is S.LOADING else m


def assert_rows_match_containers(bed, docker_client, settle_s: float = 2.0):
    """Both sides: every active row has exactly its container running; no other managed
    container exists. A failed model's dead container is removed a moment after its row says
    failed (the row first: it must tell the truth at once), so this waits up to `settle_s`."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            _rows_match_containers(bed, docker_client)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _rows_match_containers(bed, docker_client):
    # The low-level list: the high-level one inspects each container and races its removal.
    containers = docker_client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
    mine = [c for c in containers if (c.get("Labels") or {}).get("cortex.test-run")]
    by_id = {c["Id"]: c for c in mine}
    rows = crud.list_models(bed.db)
    for m in rows:
        if m.state in (S.LOADING, S.RUNNING):
            assert m.container_id in by_id and by_id[m.container_id]["State"] == "running", m
        else:
            assert m.container_id is None
    wanted = {m.container_id for m in rows if m.container_id}
    assert set(by_id) == wanted, f"containers without a row: {set(by_id) - wanted}"


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")
