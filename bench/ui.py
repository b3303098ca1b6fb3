"""Benchmark: the Models page with 200 models, in Chromium against the production build.

Prints: time from navigation to the 200th row rendered (goal under 1.5 s), time from a row
changing in the database to the page showing it (goal under 1 s median, over 10 changes),
and the console's RSS (every process of its group, largest and total).
Usage: python bench/ui.py   (after `make test` has set up the venv, bun and Chromium)
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cortex_app import auth  # noqa: E402
from cortex_app.models import Model, ModelState, utcnow  # noqa: E402
from bench.common import group_rss_mb  # noqa: E402
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
            engine = sa.create_engine(db_url)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/login")
                page.fill("#field-username", "bench")
                page.fill("#field-password", "bench-password-1")
                page.click("#sign-in")
                page.wait_for_url(re.compile(r".*/models/?$"))
                page.locator(".model-row").nth(N - 1).wait_for(timeout=30_000)
                renders = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    page.goto(url + "/models")
                    page.locator(".model-row").nth(N - 1).wait_for(timeout=30_000)
                    renders.append(time.perf_counter() - t0)
                changes = []
                for i in range(10):
                    name = f"model-{i * 17:03d}"
                    badge = page.locator(f"#model-row-{name} .state-badge")
                    t0 = time.perf_counter()
                    with engine.begin() as conn:
                        conn.execute(sa.update(Model.__table__).where(Model.__table__.c.name == name)
                                     .values(state=ModelState.FAILED.value, state_reason="bench",
                                             updated_at=utcnow()))
                    badge.filter(has_text="failed").wait_for(timeout=10_000)
                    changes.append(time.perf_counter() - t0)
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


if __name__ == "__main__":
    main()
