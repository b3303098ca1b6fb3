"""What the benchmarks share: a real console started as `make up` starts it (driven over its
HTTP API, as a script would), percentiles, reading rows straight from its SQLite file, and a
Docker socket proxy that counts the engine calls the console makes (its passes, seen from
outside, on the production path)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.console import Console, launch  # noqa: E402

LLAMA_IMAGE = "cortex-test/llama-server:latest"
INGRESS_IMAGE = "cortex-test/nginx:latest"  # what other hosts' ingresses run in the benches
VLLM_IMAGE = "cortex-test/vllm-standin:latest"
BUSYBOX_IMAGE = "cortex-test/busybox:latest"
ADMIN, PASSWORD = "bench", "bench-password-1"


def pct(values, p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def figures(values_s, unit: str = "ms") -> str:
    """median, p95, max (and n) of durations given in seconds."""
    k = 1000 if unit == "ms" else 1
    v = [x * k for x in values_s]
    return (f"median {pct(v, 50):7.1f} {unit}   p95 {pct(v, 95):7.1f} {unit}   max {max(v):7.1f} {unit}"
            f"   (n={len(v)})")


def bench_console(workdir: Path, docker_host: str, **settings: str) -> Console:
    """A console on `docker_host` with the tiny model's folder, signed in as an admin."""
    models = workdir / "models"
    models.mkdir(parents=True, exist_ok=True)
    if not (models / "tiny.gguf").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(models / "tiny.gguf")],
                       check=True, capture_output=True)
    console = launch(workdir / "data", DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models),
                     CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE, CORTEX_VLLM_IMAGE=VLLM_IMAGE, CORTEX_INGRESS_IMAGE=INGRESS_IMAGE,
                     CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD, **settings)
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    return console


def tiny(name: str) -> dict:
    return {"name": name, "engine": "llamacpp", "source": "tiny.gguf", "threads": 1, "extra_args": ["--poll", "0"]}


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a process group."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                t = p.cpu_times()
                total += t.user + t.system
        except (ProcessLookupError, psutil.Error):
            pass
    return total


def group_rss_mb(pgid: int) -> list[float]:
    """RSS (MB) of every process in a process group (a console started by make up is one)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p.memory_info().rss / 2**20)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


class Rows:
    """The console's model table, read straight from its SQLite file (read-only): the truth the
    pages show, without the API's own latency in the figures."""

    def __init__(self, console: Console):
        self.path = console.data_dir / "cortex.db"
        self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, check_same_thread=False)

    def state(self, model_id: int) -> Optional[str]:
        row = self.conn.execute("SELECT state FROM model WHERE id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    def host_port(self, model_id: int) -> Optional[int]:
        row = self.conn.execute("SELECT host_port FROM model WHERE id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.conn.close()


_REQUEST = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (/[^ ?]*)[^ ]* HTTP/1\.[01]\r\n")
_ID = re.compile(r"/[0-9a-f]{12,64}(?=/|$)")


class DockerCountingProxy:
    """A unix socket that forwards to the engine's and counts the requests going through it
    by method and path (`GET /containers/json`, `GET /containers/{id}/json`, ...)."""

    def __init__(self, upstream_socket: str, path: Path):
        self.upstream, self.path = upstream_socket, path
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.counts)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            server = await asyncio.start_unix_server(self._client, path=str(self.path))
            self._ready.set()
            async with server:
                await server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except RuntimeError:
            pass  # close() stopped the loop

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        except OSError:
            writer.close()
            return

        async def pump(src, dst, count: bool):
            tail = b""
            try:
                while data := await src.read(65536):
                    if count:  # request lines, also one cut in two by the reads (counted once)
                        for m in _REQUEST.finditer(tail + data):
                            if m.end() > len(tail):
                                path = re.sub(r"^/v[0-9.]+", "", m.group(2).decode())
                                with self._lock:
                                    self.counts[f"{m.group(1).decode()} {_ID.sub('/{id}', path)}"] += 1
                        tail = data[-200:]
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
