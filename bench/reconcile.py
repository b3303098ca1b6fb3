"""Benchmarks of the reconciler on the production path: a real console started as make up
starts it, the real engine, models started over the HTTP API. Figures printed, goals from
the chaos issue:

1. drift: `docker kill` of a running model -> its row says failed (goal: p95 <= 150 ms);
2. forged: a container carrying Cortex's labels that nobody asked for -> gone (goal: p95
   <= 1 s), half of them ignoring SIGTERM;
3. a converged pass over 500 rows and 100 real containers: the Docker API calls the console
   makes per pass, counted by a socket proxy between it and the engine (goal: one list call),
   the pass time (from /metrics), the console's RSS;
4. a probe round over 200 endpoints where 20 hang, 1 s timeout (probes.probe_many, the
   function the probe job runs; goal: under 1.5 s).

Usage: DOCKER_HOST=... python bench/reconcile.py [kills]   (`make bench` sets the engine up)
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (BUSYBOX_IMAGE, DockerCountingProxy, Rows, bench_console, figures,  # noqa: E402
                          group_rss_mb, tiny)
from cortex_app.models import Model, utcnow  # noqa: E402
from cortex_app.reconcile.probes import probe_many  # noqa: E402
from tests.console import Console  # noqa: E402


def wait_state(rows: Rows, model_id: int, state: str, timeout: float = 60, every: float = 0.002) -> float:
    deadline = time.perf_counter() + timeout
    while rows.state(model_id) != state:
        if time.perf_counter() > deadline:
            raise AssertionError(f"model {model_id} not {state} after {timeout} s")
        time.sleep(every)
    return time.perf_counter()


def drift_and_forged(host: str, kills: int, forged: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    client = docker.DockerClient(base_url=host, timeout=60)
    console = bench_console(workdir, host)
    rows = Rows(console)
    try:
        mid = console.call("POST", "/api/models", json=tiny("drift")).json()["id"]
        took = []
        for _ in range(kills):
            assert console.call("POST", f"/api/models/{mid}/start").status_code == 202
            wait_state(rows, mid, "running")
            time.sleep(0.3)
            cid = console.model(mid)["container_id"]
            # The row is watched from another thread: the kill call itself returns only once the
            # engine has cleaned the container up (~200 ms), long after the container died.
            seen: dict = {}
            watcher = threading.Thread(target=lambda: seen.update(at=wait_state(rows, mid, "failed", every=0.001)))
            watcher.start()
            t0 = time.perf_counter()
            client.api.kill(cid)
            watcher.join(60)
            took.append(seen["at"] - t0)
        print(f"drift: docker kill -> row failed          {figures(took)}   (goal p95 <= 150 ms)")

        instance = console.instance()
        gone = {"exits on SIGTERM": [], "ignores SIGTERM": []}
        for i in range(forged):
            stubborn = i % 2 == 1
            script = "trap '' TERM; while :; do sleep 1; done" if stubborn else "while :; do sleep 1; done"
            c = client.containers.run(BUSYBOX_IMAGE, ["sh", "-c", script], detach=True,
                                      labels={"cortex.managed": "true", "cortex.instance": instance,
                                              "cortex.model-id": str(mid), "cortex.spec-hash": "forged",
                                              "cortex.bench": "forged"}, restart_policy={"Name": "no"})
            t0 = time.perf_counter()  # it runs: containers.run returned
            while True:
                try:
                    client.api.inspect_container(c.id)
                except docker.errors.NotFound:
                    break
                time.sleep(0.005)
            gone["ignores SIGTERM" if stubborn else "exits on SIGTERM"].append(time.perf_counter() - t0)
            time.sleep(0.2)
        for kind, values in gone.items():
            print(f"forged ({kind:16s}) -> gone     {figures(values)}   (goal p95 <= 1 s)")
        print(f"forged (all)                    -> gone     {figures(sum(gone.values(), []))}")
    finally:
        rows.close()
        console.stop()
        console.remove_containers(client)
        console.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)


def metric(console: Console, name: str) -> float:
    text = console.call("GET", "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


def big_pass(host: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    client = docker.DockerClient(base_url=host, timeout=120)
    proxy = DockerCountingProxy(host.removeprefix("unix://"), workdir / "docker.sock")
    console = bench_console(workdir, proxy.docker_host, CORTEX_RECONCILE_INTERVAL="1")
    try:
        instance = console.instance()
        t0 = time.perf_counter()
        now = utcnow()
        db = sa.create_engine(console.db_url)
        # The first 100 are `starting` while their containers are made (the console leaves an
        # operation in flight alone), then all turn `running` at once: a converged table.
        rows = [dict(name=f"m{i}", served_name=f"m{i}", engine="llamacpp", image="img", source="tiny.gguf",
                     device="cpu", extra_args=[], extra_env={}, embeddings=False, enforce_eager=False,
                     trust_remote_code=False, startup_timeout_s=600, notes="",
                     state="starting" if i <= 100 else "stopped", state_reason="", created_at=now, updated_at=now,
                     state_changed_at=now, started_at=now, ready_at=now, health="unknown", consecutive_failures=0,
                     probe_history=[], start_on_boot=False, restart_on_failure=False, restart_max_attempts=3,
                     restart_attempts=0, spec_hash=f"h{i}" if i <= 100 else None) for i in range(1, 501)]
        with db.begin() as conn:
            ids = [r[0] for r in conn.execute(sa.insert(Model.__table__).returning(Model.__table__.c.id), rows)]
        made = {}
        for i, mid in enumerate(ids[:100], start=1):
            made[mid] = client.containers.run(
                BUSYBOX_IMAGE, ["sleep", "3600"], detach=True, init=True,
                labels={"cortex.managed": "true", "cortex.instance": instance, "cortex.model-id": str(mid),
                        "cortex.spec-hash": f"h{i}", "cortex.bench": "reconcile"}, restart_policy={"Name": "no"}).id
        table = Model.__table__
        with db.begin() as conn:
            for mid, cid in made.items():
                conn.execute(sa.update(table).where(table.c.id == mid).values(state="running", container_id=cid))
        db.dispose()
        setup_s = time.perf_counter() - t0
        time.sleep(2)  # a first pass or two with everything in place
        passes, per_pass, durations = 0, [], []
        before, seen = proxy.snapshot(), metric(console, "cortex_reconcile_passes_total")
        while passes < 10:
            time.sleep(0.05)
            now_passes = metric(console, "cortex_reconcile_passes_total")
            if now_passes > seen:
                after = proxy.snapshot()
                per_pass.append((after - before, now_passes - seen))
                durations.append(metric(console, "cortex_reconcile_last_pass_seconds"))
                before, seen = after, now_passes
                passes += 1
        calls = sum((c for c, _ in per_pass), start=Counter())
        n = sum(k for _, k in per_pass)
        per = {k: v / n for k, v in sorted(calls.items())}
        rss = group_rss_mb(console.pid)
        print(f"pass: 500 rows, 100 containers          {figures(durations)}   (the console's own passes)")
        print(f"pass: Docker API calls per pass         {per}   (over {n} passes, counted at the socket)")
        print(f"pass: console RSS                       largest process {max(rss):.0f} MB, all {sum(rss):.0f} MB"
              f"   (setup of 100 containers took {setup_s:.0f} s)")
    finally:
        console.stop()
        for c in client.containers.list(all=True, filters={"label": "cortex.bench=reconcile"}):
            c.remove(force=True)
        console.close()
        proxy.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)


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

    print(f"probes: 200 endpoints, 20 hang, 1 s     {figures(asyncio.run(main()))}   (goal under 1.5 s)")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    host = os.environ["DOCKER_HOST"]
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    probes()
    drift_and_forged(host, kills, forged=20)
    big_pass(host)
