"""Benchmark: the Models page with 200 models, in Chromium against the production build.

Prints: time from navigation to the 200th row rendered (goal under 1.5 s), time from a row
changing in the database to the page showing it (goal under 1 s median, over 10 changes),
and the console's RSS (every process of its group, largest and total).
Then, on the real engine (DOCKER_HOST), 20 tiny llama-server models running, each followed by
a stats reader, with the Models page open: the console's CPU (every process of its group; the
goal for the stats readers is under 5 % of one core, and this figure holds them and everything
else the console does) and the row-change latency again (goal: unchanged).
Usage: python bench/ui.py   (after `make test` has set up the venv, bun, Chromium and the engine)
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import sqlalchemy as sa
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cortex_app import auth  # noqa: E402
from cortex_app.models import Model, ModelState, utcnow  # noqa: E402
from bench.common import bench_console, group_cpu_s, group_rss_mb, tiny  # noqa: E402
from tests.console import Console, console_env, free_port  # noqa: E402

N = 200


def seed(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    now = utcnow()
    rows = [dict(name=f"model-{i:03d}", served_name=f"model-{i:03d}", engine="llamacpp", image="img",
                 source="tiny.gguf", device="cpu", extra_args=[], extra_env={}, embeddings=False,
                 enforce_eager=False, trust_remote_code=False, startup_timeout_s=600, notes="", state="stopped",
                 state_reason="", created_at=now, updated_at=now, state_changed_at=now, health="unknown",
                 consecutive_failures=0, probe_history=[], start_on_boot=False, restart_on_failure=False,
                 restart_max_attempts=3, restart_attempts=0) for i in range(N)]
    with engine.begin() as conn:
        conn.execute(sa.insert(Model.__table__), rows)
    auth.create_admin(engine, "bench", "bench-password-1")
    engine.dispose()


def sign_in(page, url: str, user: str, password: str) -> None:
    """Sign in (it lands on the Overview), then open the Models page."""
    page.goto(url + "/login")
    page.fill("#field-username", user)
    page.fill("#field-password", password)
    page.click("#sign-in")
    page.wait_for_url(re.compile(r"^https?://[^/]+/$"))
    page.goto(url + "/models")


def row_changes(page, db_url: str, names: list[str]) -> list[float]:
    """Seconds from a row's state changing in the database to the open page showing it."""
    engine = sa.create_engine(db_url)
    out = []
    for name in names:
        badge = page.locator(f"#model-row-{name} .state-badge")
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.update(Model.__table__).where(Model.__table__.c.name == name)
                         .values(state=ModelState.FAILED.value, state_reason="bench", updated_at=utcnow()))
        badge.filter(has_text="failed").wait_for(timeout=10_000)
        out.append(time.perf_counter() - t0)
    engine.dispose()
    return out


def readers_alone(containers: dict[int, str], host: str, seconds: float) -> float:
    """The console's ResourceSampler following the same containers, in this process: its
    readers' own CPU, % of one core."""
    import psutil

    from cortex_app.runtime.docker import DockerRuntime
    from cortex_app.sampler import ResourceSampler

    runtime = DockerRuntime(host)
    sampler = ResourceSampler(runtime)
    try:
        sampler.follow(containers)
        time.sleep(3)
        me = psutil.Process()
        c0, t0 = me.cpu_times(), time.monotonic()
        time.sleep(seconds)
        c1 = me.cpu_times()
        return ((c1.user - c0.user) + (c1.system - c0.system)) / (time.monotonic() - t0) * 100
    finally:
        sampler.close()
        runtime.close()


def stats_phase(n_models: int = 20, seconds: float = 30.0) -> None:
    host = os.environ.get("DOCKER_HOST")
    if not host:
        print("ui: stats readers: skipped, DOCKER_HOST is not set (make bench sets it)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        console = bench_console(Path(tmp), host)
        try:
            ids = [console.call("POST", "/api/models", json=tiny(f"stats-{i:02d}")).json()["id"]
                   for i in range(n_models)]
            flips = [f"row-{i}" for i in range(10)]  # stopped rows the latency test flips
            for name in flips:
                console.call("POST", "/api/models", json=tiny(name))
            for mid in ids:
                assert console.call("POST", f"/api/models/{mid}/start").status_code == 202
            for mid in ids:
                console.wait_model(mid, "running", timeout=120)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                sign_in(page, console.url, "bench", "bench-password-1")
                page.locator("#model-row-stats-00 .row-usage").filter(has_text="CPU").wait_for(timeout=30_000)
                time.sleep(3)  # every reader has started
                cpu0, t0 = group_cpu_s(console.pid), time.monotonic()
                time.sleep(seconds)
                share = (group_cpu_s(console.pid) - cpu0) / (time.monotonic() - t0) * 100
                changes = row_changes(page, f"sqlite:///{console.data_dir}/cortex.db", flips)
                browser.close()
            cpu0, t0 = group_cpu_s(console.pid), time.monotonic()
            time.sleep(seconds)
            no_page = (group_cpu_s(console.pid) - cpu0) / (time.monotonic() - t0) * 100
            readers = readers_alone({mid: console.model(mid)["container_id"] for mid in ids}, host, seconds)
            for mid in ids:
                console.call("POST", f"/api/models/{mid}/stop")
        finally:
            console.stop()
            client = docker.DockerClient(base_url=host)
            console.remove_containers(client)
            client.close()
            console.close()
    print(f"ui: console CPU, {n_models} running models, Models page open  {share:6.2f} % of one core "
          f"(all its work: probes, passes, the page's tick, stats, /metrics)")
    print(f"ui: console CPU, {n_models} running models, no page open      {no_page:6.2f} % of one core")
    print(f"ui: the {n_models} stats readers alone (ResourceSampler)         {readers:6.2f} % of one core "
          f"(goal: under 5 %)")
    print(f"ui: row change -> page, with {n_models} models reporting  median {statistics.median(changes) * 1000:7.0f} ms"
          f"   max {max(changes) * 1000:7.0f} ms   (n={len(changes)})")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, port = Path(tmp) / "data", free_port()
        data.mkdir()
        # Started as make up starts it; no engine (the page's own cost is measured, not Docker's).
        env = console_env(data, port, Path(tmp) / "run", DOCKER_HOST="unix:///nonexistent.sock")
        subprocess.run([sys.executable, "-m", "cortex_app.prestart"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        db_url = f"sqlite:///{data}/cortex.db"
        seed(db_url)
        url = f"http://127.0.0.1:{port}"
        console = Console(url, data, Path(tmp) / "run", env)
        console.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                sign_in(page, url, "bench", "bench-password-1")
                page.locator(".model-row").nth(N - 1).wait_for(timeout=30_000)
                renders = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    page.goto(url + "/models")
                    page.locator(".model-row").nth(N - 1).wait_for(timeout=30_000)
                    renders.append(time.perf_counter() - t0)
                changes = row_changes(page, db_url, [f"model-{i * 17:03d}" for i in range(10)])
                browser.close()
            rss = group_rss_mb(console.pid)
        finally:
            console.stop()
            console.close()
    print(f"ui: Models page, {N} rows, first render   median {statistics.median(renders) * 1000:7.0f} ms   "
          f"max {max(renders) * 1000:7.0f} ms   (n={len(renders)})")
    print(f"ui: row change in the table -> page       median {statistics.median(changes) * 1000:7.0f} ms   "
          f"max {max(changes) * 1000:7.0f} ms   (n={len(changes)})")
    print(f"ui: console RSS                           largest process {max(rss):6.0f} MB   "
          f"all {len(rss)} processes {sum(rss):6.0f} MB")
    stats_phase()


if __name__ == "__main__":
    main()
