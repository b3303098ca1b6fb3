"""Benchmark: webhooks through the outbox.

1. transition -> receiver: a model state change written by lifecycle.transition until a
   real HTTP receiver on loopback has the signed delivery, with the scheduler's delivery
   job running as in the console (median, p95 over N; goal p95 under 1 s);
2. drain: 1,000 pending deliveries (10 models x 100 events) to a healthy receiver.

Usage: python bench/webhooks.py [N]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Session  # noqa: E402

from cortex_app import webhooks  # noqa: E402
from cortex_app import secretbox  # noqa: E402
from cortex_app.db import make_engine  # noqa: E402
from cortex_app.lifecycle import Lifecycle  # noqa: E402
from cortex_app.models import Engine, Model, ModelState  # noqa: E402
from cortex_app.reconcile.leader import LeaderLease  # noqa: E402
from cortex_app.reconcile.loop import Reconciler  # noqa: E402
from cortex_app.reconcile.scheduler import ConsoleScheduler  # noqa: E402
from cortex_app.runtime.docker import DockerRuntime  # noqa: E402
from cortex_app.settings import load_settings  # noqa: E402
from tests.conftest import migrate  # noqa: E402
from tests.unit.test_webhooks import Receiver  # noqa: E402

S = ModelState


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"CORTEX_DATA_DIR": tmp, "DOCKER_HOST": os.environ.get("DOCKER_HOST", ""),
                                  "CORTEX_RECONCILE_INTERVAL": "3600", "CORTEX_DOCKER_EVENTS": "false"})
        secretbox.use(settings)
        migrate(settings.db_url)
        db = make_engine(settings.db_url)
        receiver = Receiver()
        webhooks.create_endpoint(db, url=receiver.url, event_types=["model.failed", "model.stopped"])
        lc = Lifecycle(db, DockerRuntime(settings.docker_host), settings)
        sched = ConsoleScheduler(Reconciler(lc), LeaderLease(db), settings)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(sched.start(), loop).result(60)  # its boot pass runs first
        with Session(db, expire_on_commit=False) as s:
            m = Model(name="bench", served_name="bench", engine=Engine.LLAMACPP, image="img", source="x.gguf",
                      state=S.STOPPED)
            s.add(m)
            s.commit()
        time.sleep(0.5)
        latencies = []
        state = S.STOPPED
        for _ in range(n):
            # stopped <-> failed: changes the reconciler leaves alone (no container either way)
            to = S.FAILED if state == S.STOPPED else S.STOPPED
            before = len(receiver.arrivals)
            t0 = time.perf_counter()
            lc.transition(m.id, to, reason="bench", actor="bench", allowed_from=(state,))
            while len(receiver.arrivals) == before:
                time.sleep(0.001)
            latencies.append(receiver.arrivals[before] - t0)
            state = to
        asyncio.run_coroutine_threadsafe(sched.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)

        with Session(db) as s:
            for i in range(1000):
                webhooks.enqueue(s, "model.failed", {"n": i}, model_id=i % 10)
            s.commit()
        before = len(receiver.arrivals)
        t0 = time.perf_counter()
        deliverer = webhooks.Deliverer(db)
        while len(receiver.arrivals) - before < 1000:
            asyncio.run(deliverer.deliver_due())
        drain = time.perf_counter() - t0
        receiver.close()
    ms = [x * 1000 for x in latencies]
    print(f"webhooks: transition -> receiver      median {statistics.median(ms):7.1f} ms   p95 {pct(ms, 95):7.1f} ms"
          f"   max {max(ms):7.1f} ms   (n={n})")
    print(f"webhooks: drain 1,000 pending         {drain:7.2f} s   ({1000 / drain:.0f} deliveries/s, 10 models x 100)")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
