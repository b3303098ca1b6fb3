"""The resource sampler in the console's scheduler against a real llama-server: CPU and
memory from Docker's stats stream, generated tokens/s from the engine's own /metrics, the
readers following starts and stops; and the cost of following many containers."""

import os
import time

import httpx
import psutil

from cortex_app.models import ModelState
from cortex_app.sampler import ResourceSampler
from tests.conftest import BUSYBOX_IMAGE
from tests.integration.conftest import wait_for

S = ModelState


def test_a_running_model_reports_cpu_memory_and_tokens(bed):
    m = bed.llama()
    st = bed.scheduler()
    sampler = st.scheduler.resources
    assert bed.start_ready(m.id).state is S.RUNNING
    history = sampler.history
    wait_for(lambda: (s := history.latest(m.id)) is not None and s.mem_bytes and s.cpu_pct is not None, 15)
    mem = history.latest(m.id).mem_bytes
    assert 1 << 20 < mem < 2 << 30, mem  # llama-server with a 0.7 MB model: some MiB
    url = f"http://127.0.0.1:{bed.row(m.id).host_port}/v1/completions"
    wait_for(lambda: history.latest(m.id).in_flight is not None, 10)  # /metrics scraped
    t_end = time.monotonic() + 4
    while time.monotonic() < t_end:  # a steady load: the figures must show it
        r = httpx.post(url, json={"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0}, timeout=30)
        assert r.status_code == 200
    wait_for(lambda: (history.latest(m.id).tokens_s or 0) > 0, 10)
    busy = [s.cpu_pct for s in history.series(m.id) if s.cpu_pct is not None]
    print(f"\ncpu % samples {busy}, memory {mem / 2**20:.1f} MiB, {history.latest(m.id).tokens_s:.1f} tok/s")
    assert max(busy) > 5, busy  # the completions cost CPU, and the stats showed it
    bed.lc.stop(m.id, actor="admin:test")
    wait_for(lambda: history.latest(m.id) is None and sampler.readers == 0, 10)  # stopped: followed no more


def test_twenty_stats_readers_cost_little(docker_client, docker_host, test_labels):
    """bench/ui.py measures the console; this keeps the readers' own cost in check under make test."""
    from cortex_app.runtime.docker import DockerRuntime

    containers = [docker_client.containers.run(BUSYBOX_IMAGE, ["sleep", "120"], detach=True, labels=test_labels,
                                               init=True) for _ in range(20)]
    runtime = DockerRuntime(docker_host)
    sampler = ResourceSampler(runtime)
    try:
        sampler.follow({i: c.id for i, c in enumerate(containers)})
        wait_for(lambda: all(sampler.history.latest(i) for i in range(20)), 20)
        me = psutil.Process(os.getpid())
        cpu0, t0 = me.cpu_times(), time.monotonic()
        time.sleep(10)
        cpu1, wall = me.cpu_times(), time.monotonic() - t0
        share = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall * 100
        print(f"\n20 stats readers: {share:.2f} % of one core over {wall:.1f} s")
        assert share < 5, f"the stats readers take {share:.1f} % of a core"
        assert all(len(sampler.history.series(i)) >= 3 for i in range(20))
    finally:
        sampler.close()
        wait_for(lambda: sampler.readers == 0, 10)
        runtime.close()
