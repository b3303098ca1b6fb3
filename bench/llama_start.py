"""Benchmark: how long the real llama-server test image takes from `containers.run` to
`/health` 200, and to stop (init=True, SIGTERM), for the tiny GGUF model.

Not a test: it prints figures (median, min, max over N runs) for the README and for
comparisons with later lifecycle code, which adds its own overhead on top of these.
Usage: DOCKER_HOST=... python bench/llama_start.py [N]   (make test sets up the engine)
"""

from __future__ import annotations

import statistics
import sys
import time

import docker
import httpx

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from tests.conftest import LLAMA_IMAGE, free_port  # noqa: E402


def one_run(client: docker.DockerClient) -> tuple[float, float]:
    port = free_port()
    t0 = time.perf_counter()
    c = client.containers.run(
        LLAMA_IMAGE, ["-m", "/opt/models/tiny.gguf", "--host", "0.0.0.0", "--port", "8080", "-t", "1", "--poll", "0"],
        detach=True, init=True, restart_policy={"Name": "no"}, labels={"cortex.bench": "llama_start"},
        ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        c.stop(timeout=10)
        stopped = time.perf_counter() - t1
    finally:
        c.remove(force=True)
    return ready, stopped


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    client = docker.from_env()
    runs = [one_run(client) for _ in range(n)]
    for label, values in (("run -> /health 200", [r[0] for r in runs]), ("stop (SIGTERM via init)", [r[1] for r in runs])):
        print(f"{label:26s} median {statistics.median(values) * 1000:7.1f} ms   "
              f"min {min(values) * 1000:7.1f}   max {max(values) * 1000:7.1f}   (n={n})")


if __name__ == "__main__":
    main()
