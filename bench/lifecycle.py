"""Benchmark: the console's own overhead around a real llama-server start, over N cycles.

- Start -> container create call: what lifecycle.start spends before Docker is asked
  (reading the row, building the spec, the compare-and-set, claiming a port).
- /health first 200 -> row says `running`: how long after the engine is ready the table
  tells the truth (goal: under 250 ms median). A watcher thread polls /health every 2 ms
  and the table every 1 ms, independently of the lifecycle's own polling.

Usage: DOCKER_HOST=... python bench/lifecycle.py [N]   (`make bench` sets the engine up)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cortex_app import crud  # noqa: E402
from cortex_app.db import make_engine  # noqa: E402
from cortex_app.lifecycle import Lifecycle  # noqa: E402
from cortex_app.models import Model, ModelState  # noqa: E402
from cortex_app.runtime.docker import DockerRuntime  # noqa: E402
from cortex_app.settings import load_settings  # noqa: E402
from tests.conftest import LLAMA_IMAGE, migrate  # noqa: E402


class TimedRuntime(DockerRuntime):
    """The real runtime, noting when create is called and starting the /health watcher."""

    def __init__(self, host, db):
        super().__init__(host, extra_labels={"cortex.bench": "lifecycle"})
        self.db = db
        self.create_called = 0.0
        self.watch: threading.Thread | None = None
        self.first_200 = 0.0
        self.row_running = 0.0

    def create_and_start(self, spec, host_port):
        self.create_called = time.perf_counter()
        info = super().create_and_start(spec, host_port)
        self.watch = threading.Thread(target=self._watch, args=(host_port, spec.model_id), daemon=True)
        self.watch.start()
        return info

    def _watch(self, port: int, model_id: int) -> None:
        with httpx.Client(timeout=1) as http:
            while True:
                try:
                    if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        self.first_200 = time.perf_counter()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.002)
        while True:
            with Session(self.db) as s:
                if s.get(Model, model_id).state == ModelState.RUNNING:
                    self.row_running = time.perf_counter()
                    return
            time.sleep(0.001)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(models / "tiny.gguf")],
                       check=True)
        settings = load_settings({"CORTEX_DATA_DIR": tmp, "CORTEX_MODELS_DIR": str(models),
                                  "CORTEX_LLAMACPP_IMAGE": LLAMA_IMAGE,
                                  "DOCKER_HOST": __import__("os").environ.get("DOCKER_HOST", "")})
        migrate(settings.db_url)
        db = make_engine(settings.db_url)
        runtime = TimedRuntime(settings.docker_host, db)
        lc = Lifecycle(db, runtime, settings)
        model = crud.create_model(db, settings, {"name": "bench", "engine": "llamacpp", "source": "tiny.gguf",
                                                 "extra_args": ["-t", "1", "--poll", "0"]})
        pre, post, total = [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            m = lc.start_and_wait(model.id, actor="bench")
            assert m.state == ModelState.RUNNING, m.state_reason
            runtime.watch.join(timeout=10)
            pre.append(runtime.create_called - t0)
            post.append(runtime.row_running - runtime.first_200)
            total.append(runtime.row_running - t0)
            lc.stop(model.id, actor="bench")
        runtime.close()
    for label, values in (("Start -> create call", pre), ("/health 200 -> row running", post),
                          ("Start -> row running (total)", total)):
        ms = sorted(v * 1000 for v in values)
        print(f"{label:30s} median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f}   max {ms[-1]:7.1f}   (n={n})")


if __name__ == "__main__":
    main()
