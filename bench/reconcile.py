"""Benchmarks of the reconciler (figures printed; goals from the reconciler issue):

1. drift detection: `docker kill` of a running llama-server -> row `failed`, through the
   event stream, over N kills: median and p95 (goal: p95 under 1 s);
2. one pass over 500 model rows and 100 real containers: Docker API calls per pass (goal:
   1 list call, no inspect when nothing changed), pass time (goal: under 100 ms, no probes),
   this process's RSS (goal: under 250 MB);
3. probes of 200 endpoints with a 1 s timeout where 20 hang: one round (goal: under 1.5 s).

Usage: DOCKER_HOST=... python bench/reconcile.py [kills]   (`make bench` sets the engine up)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cortex_app import crud  # noqa: E402
from cortex_app.db import make_engine  # noqa: E402
from cortex_app.engines.spec import LABEL_MANAGED, LABEL_MODEL_ID, LABEL_SPEC_HASH  # noqa: E402
from cortex_app.lifecycle import Lifecycle  # noqa: E402
from cortex_app.models import Model, ModelState, utcnow  # noqa: E402
from cortex_app.reconcile.leader import LeaderLease  # noqa: E402
from cortex_app.reconcile.loop import Reconciler  # noqa: E402
from cortex_app.reconcile.probes import probe_many  # noqa: E402
from cortex_app.reconcile.scheduler import ConsoleScheduler  # noqa: E402
from cortex_app.runtime.docker import DockerRuntime  # noqa: E402
from cortex_app.settings import load_settings  # noqa: E402
from tests.conftest import BUSYBOX_IMAGE, LLAMA_IMAGE, migrate  # noqa: E402

BENCH_LABEL = {"cortex.bench": "reconcile"}


class CountingRuntime(DockerRuntime):
    """The real runtime, counting the calls a pass makes."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: dict[str, int] = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def list_managed(self, model_id=None):
        self._count("list")
        return super().list_managed(model_id)

    def inspect(self, container_id):
        self._count("inspect")
        return super().inspect(container_id)

    def logs_tail(self, container_id, lines=200):
        self._count("logs")
        return super().logs_tail(container_id, lines)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def setup(tmp: str):
    models = Path(tmp) / "models"
    models.mkdir()
    subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(models / "tiny.gguf")],
                   check=True)
    settings = load_settings({"CORTEX_DATA_DIR": tmp, "CORTEX_MODELS_DIR": str(models),
                              "CORTEX_LLAMACPP_IMAGE": LLAMA_IMAGE, "DOCKER_HOST": os.environ.get("DOCKER_HOST", ""),
                              "CORTEX_RECONCILE_INTERVAL": "60"})
    migrate(settings.db_url)
    return settings, make_engine(settings.db_url)


def drift(kills: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings, db = setup(tmp)
        runtime = DockerRuntime(settings.docker_host, extra_labels=BENCH_LABEL)
        lc = Lifecycle(db, runtime, settings)
        sched = ConsoleScheduler(Reconciler(lc), LeaderLease(db), settings)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(sched.start(), loop).result(60)
        client = docker.DockerClient(base_url=settings.docker_host)
        model = crud.create_model(db, settings, {"name": "drift", "engine": "llamacpp", "source": "tiny.gguf",
                                                 "extra_args": ["-t", "1", "--poll", "0"]})
        took = []
        for _ in range(kills):
            m = lc.start_and_wait(model.id, actor="bench")
            assert m.state == ModelState.RUNNING, m.state_reason
            time.sleep(0.2)
            t0 = time.perf_counter()
            client.containers.get(m.container_id).kill()
            while crud.get_model(db, model.id).state != ModelState.FAILED:
                time.sleep(0.005)
            took.append(time.perf_counter() - t0)
        asyncio.run_coroutine_threadsafe(sched.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        runtime.close()
        client.close()
    ms = [t * 1000 for t in took]
    print(f"drift: docker kill -> row failed      median {statistics.median(ms):7.1f} ms   "
          f"p95 {pct(ms, 95):7.1f} ms   max {max(ms):7.1f} ms   (n={kills}, via events)")


def big_pass() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings, db = setup(tmp)
        client = docker.DockerClient(base_url=settings.docker_host, timeout=120)
        t0 = time.perf_counter()
        now = utcnow()
        rows = []
        for i in range(1, 501):
            rows.append(dict(name=f"m{i}", served_name=f"m{i}", engine="llamacpp", image=LLAMA_IMAGE,
                             source="tiny.gguf", device="cpu", extra_args=[], extra_env={}, embeddings=False,
                             enforce_eager=False, trust_remote_code=False, startup_timeout_s=600, notes="",
                             state="running" if i <= 100 else "stopped", state_reason="", created_at=now,
                             updated_at=now, state_changed_at=now, health="unknown", consecutive_failures=0,
                             probe_history=[], start_on_boot=False, restart_on_failure=False,
                             restart_max_attempts=3, restart_attempts=0, spec_hash=f"h{i}" if i <= 100 else None))
        with db.begin() as conn:
            conn.execute(sa.insert(Model.__table__), rows)
        ids = {}
        for i in range(1, 101):
            c = client.containers.run(BUSYBOX_IMAGE, ["sleep", "3600"], detach=True, init=True,
                                      labels={**BENCH_LABEL, LABEL_MANAGED: "true", LABEL_MODEL_ID: str(i),
                                              LABEL_SPEC_HASH: f"h{i}"}, restart_policy={"Name": "no"})
            ids[i] = c.id
        with db.begin() as conn:
            for i, cid in ids.items():
                conn.execute(sa.update(Model.__table__).where(Model.__table__.c.id == i).values(container_id=cid))
        made = time.perf_counter() - t0
        try:
            runtime = CountingRuntime(settings.docker_host)
            rec = Reconciler(Lifecycle(db, runtime, settings))
            times, calls = [], []
            for _ in range(11):
                runtime.calls = {}
                report = asyncio.run(rec.reconcile_once())
                assert report.actions == [] and report.failures == [], (report.actions[:3], report.failures[:3])
                times.append(report.duration_s * 1000)
                calls.append(dict(runtime.calls))
            times = times[1:]  # the first pass warms the client and the DB pool
            rss = psutil.Process().memory_info().rss / 2**20
            print(f"pass: 500 rows, 100 containers        median {statistics.median(times):7.1f} ms   "
                  f"max {max(times):7.1f} ms   (n={len(times)}, converged: 0 actions)")
            print(f"pass: Docker API calls per pass       {calls[-1]}")
            print(f"pass: this process's RSS              {rss:7.1f} MB   (setup of 100 containers took {made:.0f} s)")
            runtime.close()
        finally:
            for c in client.containers.list(all=True, filters={"label": "cortex.bench=reconcile"}):
                c.remove(force=True)
            client.close()


def probes() -> None:
    async def main():
        async def ok(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        async def hang(reader, writer):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                writer.close()

        good = await asyncio.start_server(ok, "127.0.0.1", 0)
        bad = await asyncio.start_server(hang, "127.0.0.1", 0)
        gp, bp = good.sockets[0].getsockname()[1], bad.sockets[0].getsockname()[1]
        targets = [(i, f"http://127.0.0.1:{bp if i < 20 else gp}/health") for i in range(200)]
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            results = await probe_many(targets, timeout=1.0)
            rounds.append(time.perf_counter() - t0)
            assert sum(r.ok for r in results.values()) == 180
        good.close()
        bad.close()
        return rounds

    rounds = asyncio.run(main())
    print(f"probes: 200 endpoints, 20 hang, 1 s   median {statistics.median(rounds) * 1000:7.1f} ms   "
          f"max {max(rounds) * 1000:7.1f} ms   (n={len(rounds)} rounds)")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    probes()
    big_pass()
    drift(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
