"""Benchmark: the OpenAI-compatible gateway (`<console>/v1`) against the same llama.cpp server
reached directly, through Debian's nginx as a plain reverse proxy, and through LiteLLM's proxy.

One real console, started as `make up` starts it, runs one tiny llama-server model (the test
image `cortex-test/llama-server:latest`, the tiny GGUF, `-t 1 --poll 0 --parallel 4`) on the
real engine (DOCKER_HOST); everything is set up over the console's HTTP API (the model, its
start, an inference key). The targets, all in front of the same upstream container:

  direct    http://127.0.0.1:<the model's host port>            (no proxy: the floor)
  nginx     Debian's nginx, a plain reverse proxy (no keys, no metering; upstream keepalive,
            proxy_buffering off, `proxy_next_upstream ... non_idempotent` so that a kept
            connection llama-server closed after a stream is retried, not a 502); installed
            with apt-get if missing
  cortex    <console>/v1 with an inference key (usage metering on: the default)
  litellm   LiteLLM's proxy (`litellm[proxy]`, its own venv under /tmp/cortex-bench-litellm,
            made once and reused; one worker, master key, LITELLM_LOG=WARNING so no access log)
  floor asgi, floor rsgi
            references, not products (bench/proxy_floor.py): a bare pass-through under the
            console's own server (granian, one worker) and the gateway's own engine client, on
            granian's ASGI interface (the one the console runs) and its RSGI one: what a /v1
            request costs before any gateway work

Cases, each after a warm-up: chat completions, non-streamed (max_tokens 8) and streamed
(`stream: true`, max_tokens 16), at concurrency 1 and 32, from one asyncio process with a lean
HTTP/1.1 client (raw asyncio streams, one kept connection per worker). Per case: requests/s,
latency p50/p99, time to first body chunk for streams (p50/p99), non-2xx and 5xx answers,
streams that did not really stream (fewer than 2 chunks, or no final `data: [DONE]`, or an
error event), and the proxy's CPU (user+sys, every process of its process group, from psutil)
per request: raw, and net of what it burns idle in the same time (measured just before).
Then the console is restarted on the same data dir with CORTEX_GATEWAY_METERING=false, the
model started again, and Cortex's plain cases (c=1, c=32) are run again, with a direct
baseline on the new container: metering on vs off. Last, Cortex's added latency, CPU per request and throughput
ratios are printed next to the gateway's goals.

Everything the bench started is stopped at the end, also on Ctrl-C or an error: the console
(which stops its model), nginx and LiteLLM (by PID), any container left with the console's
label, the temp dirs.

Usage (after `make test` has set up the venv and the engine; ~5-10 minutes on a 2-core VM):
  eval "$(scripts/engine.sh up)" && . scripts/env.sh && python bench/gateway.py [--n1 300] [--n32 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import ADMIN, PASSWORD, bench_console, group_cpu_s, pct  # noqa: E402
from tests.console import Console, console_env, free_port  # noqa: E402

LITELLM_VENV = Path("/tmp/cortex-bench-litellm")
LITELLM_KEY = "sk-bench-litellm-master-0001"
MODEL_BODY = {"name": "tiny", "engine": "llamacpp", "source": "tiny.gguf", "threads": 1,
              "extra_args": ["--poll", "0", "--parallel", "4"]}
REQUEST_TIMEOUT_S = 60.0
SETTLE_S = 1.2  # after a case, before its CPU is read: the meter's 1 s flush is in the figure
GOALS = {"added_p50_ms": 1.5, "added_ttft_ms": 2.0, "cpu_ms": 1.0, "vs_litellm": 4.0}


def log(msg: str) -> None:
    print(f"gateway-bench: {msg}", flush=True)


# --- CPU of a process group ---------------------------------------------------------------------


# --- the load generator -------------------------------------------------------------------------


class Failed(Exception):
    pass


@dataclass
class Answer:
    status: int
    latency: float
    first: Optional[float]  # seconds to the first non-empty body chunk
    chunks: int
    body: bytes


class Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.transport.abort()


class Target:
    """One place to send chat completions to: base URL, its headers, the model name it wants, a
    way to read its CPU, and a lean HTTP/1.1 client (one kept connection per worker)."""

    def __init__(self, name: str, url: str, model: str, token: Optional[str] = None,
                 cpu: Optional[Callable[[], float]] = None):
        self.name, self.url, self.model, self.cpu = name, url, model, cpu
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self.reconnects = 0  # kept connections the server had closed (the request sent again)

    def request_bytes(self, stream: bool) -> bytes:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Say something short."}],
                "max_tokens": 16 if stream else 8}
        if stream:
            body["stream"] = True
        raw = json.dumps(body).encode()
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + f"{self.host}:{self.port}".encode()
                + b"\r\nContent-Type: application/json\r\nAccept: */*\r\n" + self.auth
                + b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)

    async def _connect(self) -> Conn:
        r, w = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return Conn(r, w)

    async def one(self, conn: Optional[Conn], data: bytes) -> tuple[Answer, Optional[Conn]]:
        """Send one request (on `conn` if it is still usable); the answer and the connection to
        keep (None: closed)."""
        t0 = time.perf_counter()
        kept = conn is not None and conn.usable()
        if conn is not None and not kept:
            conn.close()
        if not kept:
            conn = await self._connect()
        try:
            return await self._exchange(conn, data, t0)
        except Failed as exc:
            conn.close()
            if kept and str(exc) == "closed-before-answer":
                # The server had closed it (llama-server does after every stream, though it says
                # Keep-Alive): timed from the fresh connection on, as a client that knew would pay.
                self.reconnects += 1
                t0 = time.perf_counter()
                conn = await self._connect()
                try:
                    return await self._exchange(conn, data, t0)
                except BaseException:
                    conn.close()
                    raise
            raise
        except BaseException:
            conn.close()
            raise

    async def _exchange(self, conn: Conn, data: bytes, t0: float) -> tuple[Answer, Optional[Conn]]:
        r, w = conn.reader, conn.writer
        try:
            w.write(data)
            block = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise Failed(f"broken answer head ({exc!r})") from None
            raise Failed("closed-before-answer") from None
        lines = block.split(b"\r\n")
        version, code = lines[0].split(b" ", 2)[:2]
        status = int(code)
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
        keep = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        parts, first = [], None
        try:
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                while True:
                    size = int((await r.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                    if size == 0:
                        while await r.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    chunk = (await r.readexactly(size + 2))[:-2]
                    if first is None:
                        first = time.perf_counter() - t0
                    parts.append(chunk)
            elif b"content-length" in headers:
                left = int(headers[b"content-length"])
                while left:
                    chunk = await r.read(min(left, 65536))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", left)
                    if first is None:
                        first = time.perf_counter() - t0
                    left -= len(chunk)
                    parts.append(chunk)
            else:
                keep = False
                while chunk := await r.read(65536):
                    if first is None:
                        first = time.perf_counter() - t0
                    parts.append(chunk)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as exc:
            raise Failed(f"broken answer body ({type(exc).__name__})") from None
        answer = Answer(status, time.perf_counter() - t0, first, len(parts), b"".join(parts))
        if not keep:
            conn.close()
            return answer, None
        return answer, conn


@dataclass
class Case:
    target: str
    case: str
    n: int
    c: int
    stream: bool
    wall: float = 0.0
    latencies: list = field(default_factory=list)
    ttfts: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)  # no HTTP answer: why -> count
    bad_streams: int = 0  # 200 streams with < 2 chunks, no final `data: [DONE]`, or an error event
    cpu_s: Optional[float] = None
    idle_cpu_s: Optional[float] = None  # what the proxy burns idle over the same time
    client_cpu_s: float = 0.0
    reconnects: int = 0

    @property
    def done(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.n / self.wall if self.wall else 0.0

    @property
    def non2xx(self) -> int:
        return sum(v for k, v in self.statuses.items() if not 200 <= k < 300) + sum(self.failures.values())

    @property
    def s5xx(self) -> int:
        return sum(v for k, v in self.statuses.items() if k >= 500)

    def p(self, q: float, ttft: bool = False) -> Optional[float]:
        v = self.ttfts if ttft else self.latencies
        return pct(v, q) * 1000 if v else None

    @property
    def cpu_ms(self) -> Optional[float]:
        return None if self.cpu_s is None else self.cpu_s / self.n * 1000

    @property
    def net_cpu_ms(self) -> Optional[float]:
        if self.cpu_s is None or self.idle_cpu_s is None:
            return None
        return max(0.0, self.cpu_s - self.idle_cpu_s) / self.n * 1000


def stream_ok(a: Answer) -> bool:
    body = a.body.rstrip()
    return a.chunks >= 2 and body.endswith(b"data: [DONE]") and b'data: {"error"' not in body


async def drive(target: Target, n: int, c: int, stream: bool, case: Case) -> None:
    data = target.request_bytes(stream)
    left = n

    async def worker() -> None:
        nonlocal left
        conn = None
        while left > 0:
            left -= 1
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    answer, conn = await target.one(conn, data)
            except (Failed, OSError, TimeoutError) as exc:
                why = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
                case.failures[why] = case.failures.get(why, 0) + 1
                conn = None
                continue
            case.latencies.append(answer.latency)
            case.statuses[answer.status] = case.statuses.get(answer.status, 0) + 1
            if stream and 200 <= answer.status < 300:
                if answer.first is not None:
                    case.ttfts.append(answer.first)
                if not stream_ok(answer):
                    case.bad_streams += 1
        if conn is not None:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    case.wall = time.perf_counter() - t0


def run_case(target: Target, name: str, n: int, c: int, stream: bool, idle_rate: Optional[float]) -> Case:
    case = Case(target.name, name, n, c, stream)
    me = psutil.Process()
    r0 = target.reconnects
    cpu0, t0 = (target.cpu() if target.cpu else None), time.monotonic()
    m0 = me.cpu_times()  # after the proxy's CPU is read (that scan is not the client's work)
    asyncio.run(drive(target, n, c, stream, case))
    m1 = me.cpu_times()
    if target.cpu:
        time.sleep(SETTLE_S)
        case.cpu_s = target.cpu() - cpu0
        if idle_rate is not None:
            case.idle_cpu_s = idle_rate * (time.monotonic() - t0)
    case.client_cpu_s = (m1.user - m0.user) + (m1.system - m0.system)
    case.reconnects = target.reconnects - r0
    return case


def warm_up(target: Target) -> None:
    """A few of each kind, checked: a target that does not answer 200 stops the bench."""
    for stream in (False, True):
        case = Case(target.name, "warm-up", 20, 2, stream)
        asyncio.run(drive(target, 20, 2, stream, case))
        if case.statuses.get(200, 0) != 20:
            raise RuntimeError(f"{target.name} does not answer 200 to {'streamed' if stream else 'plain'} "
                               f"chat completions: statuses {case.statuses}, failures {case.failures}")


def idle_rate(target: Target, seconds: float = 3.0) -> Optional[float]:
    """CPU seconds per second the target's processes use with no requests."""
    if not target.cpu:
        return None
    time.sleep(0.5)
    c0, t0 = target.cpu(), time.monotonic()
    time.sleep(seconds)
    return (target.cpu() - c0) / (time.monotonic() - t0)


# --- the proxies ---------------------------------------------------------------------------------


class Child:
    """A process the bench started in a process group of its own (stopped by its PID)."""

    def __init__(self, name: str, argv: list, log_path: Path, env: Optional[dict] = None, cwd=None):
        self.name, self.log_path = name, log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return group_cpu_s(self.pid)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_http(self, url: str, timeout: float, headers: Optional[dict] = None) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:.0f} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, sig)  # the group it leads: its workers go with it
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        # workers that outlived their leader (same group)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log_file.close()


def nginx_binary() -> Optional[str]:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if found:
        return found
    log("nginx is not installed: apt-get install -y nginx-light (Debian's; its service is not started)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for pkg in ("nginx-light", "nginx"):
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg], env=env,
                           capture_output=True, text=True)
        if r.returncode == 0 and os.path.exists("/usr/sbin/nginx"):
            return "/usr/sbin/nginx"
        if "Unable to locate" in r.stderr or "has no installation candidate" in r.stderr:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    log(f"could not install nginx (apt-get said: {r.stderr.strip()[-500:]}); the nginx target is skipped")
    return None


def start_nginx(binary: str, workdir: Path, upstream_port: int, children: list) -> tuple[Child, int]:
    d = workdir / "nginx"
    for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    for p in (d, *(d / s for s in ("body", "proxy", "fastcgi", "uwsgi", "scgi"))):
        os.chmod(p, 0o777)
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream llama {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://llama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
            # llama-server closes the connection after each stream (though it says Keep-Alive);
            # a kept one found closed must be retried for a POST too, or the client gets a 502.
            proxy_next_upstream error timeout non_idempotent;
        }}
    }}
}}
""")
    child = Child("nginx", [binary, "-p", str(d), "-c", str(conf), "-e", str(d / "logs/error.log")],
                  d / "logs/stdout.log")
    children.append(child)  # stopped at the end even if it never served
    # nginx has no health route of its own here: the proxied /health of llama-server
    child.wait_http(f"http://127.0.0.1:{port}/health", 30)
    return child, port


def litellm_binary() -> Optional[Path]:
    exe = LITELLM_VENV / "bin/litellm"
    if exe.exists():
        return exe
    log(f"installing litellm[proxy] into {LITELLM_VENV} (once; pip, at low priority)")
    try:
        if not (LITELLM_VENV / "bin/python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, capture_output=True)
        pip = [str(LITELLM_VENV / "bin/pip"), "install", "-q"]
        subprocess.run(["nice", "-n", "19", *pip, "--upgrade", "pip"], check=True, capture_output=True)
        subprocess.run(["nice", "-n", "19", *pip, "litellm[proxy]"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        log(f"could not install LiteLLM ({exc.returncode}): {(exc.stderr or '')[-800:]}; the litellm target "
            "is skipped")
        return None
    return exe if exe.exists() else None


def start_litellm(exe: Path, workdir: Path, upstream_port: int, children: list) -> tuple[Child, int]:
    d = workdir / "litellm"
    d.mkdir()
    cfg = d / "config.yaml"
    cfg.write_text(f"""model_list:
  - model_name: tiny
    litellm_params:
      model: openai/tiny
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: none
litellm_settings:
  num_retries: 0
  request_timeout: 120
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "DATABASE_URL", "OPENAI_"))}
    env.update(LITELLM_MASTER_KEY=LITELLM_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="WARNING",
               HOME=str(d), NO_DOCS="True")
    child = Child("litellm", [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                              "--num_workers", "1"], d / "litellm.log", env=env, cwd=d)
    children.append(child)
    took = child.wait_http(f"http://127.0.0.1:{port}/health/liveliness", 240)
    log(f"LiteLLM serving after {took:.1f} s (pid {child.pid})")
    return child, port


def start_floor(interface: str, workdir: Path, upstream_port: int, children: list) -> tuple[Child, int]:
    port = free_port()
    env = dict(os.environ, FLOOR_UPSTREAM=f"http://127.0.0.1:{upstream_port}", PYTHONPATH=str(ROOT))
    child = Child(f"floor {interface}", [sys.executable, "-m", "granian", "--interface", interface, "--workers", "1",
                                         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                         f"bench.proxy_floor:{interface}_app"],
                  workdir / f"floor-{interface}.log", env=env, cwd=ROOT)
    children.append(child)
    child.wait_http(f"http://127.0.0.1:{port}/health", 60)
    return child, port


# --- the console ----------------------------------------------------------------------------------


def start_model(console: Console, model_id: int, key: str) -> dict:
    """Start the model through the API, wait for its row to say running (the reconciler judges
    readiness), then for the gateway's own view to list it (its snapshot: about a second)."""
    body = console.start_ready(model_id, timeout=180)
    if body["state"] != "running":
        raise RuntimeError(f"the model did not start: {body}\n{console.tail()}")
    deadline = time.monotonic() + 30
    while body["served_name"] not in [m["id"] for m in httpx.get(
            f"{console.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5).json()["data"]]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not list {body['served_name']!r} within 30 s")
        time.sleep(0.1)
    return body


def usage_rows(console: Console) -> Optional[int]:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{console.data_dir / 'cortex.db'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT COUNT(*) FROM usage_record").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


# --- the report -----------------------------------------------------------------------------------


def fmt(v: Optional[float], w: int = 7, d: int = 2) -> str:
    return f"{v:{w}.{d}f}" if v is not None else " " * (w - 1) + "-"


def table(cases: list[Case]) -> None:
    head = (f"{'target':<18} {'case':<11} {'n':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'TTFT50':>7} "
            f"{'TTFT99':>7} {'cpu ms/r':>8} {'net':>6} {'non2xx':>6} {'5xx':>4} {'badSSE':>6} {'reconn':>6} "
            f"{'client':>6}")
    print(head)
    print("-" * len(head))
    for c in cases:
        print(f"{c.target:<18} {c.case:<11} {c.n:>5} {c.rps:8.1f} {fmt(c.p(50))} {fmt(c.p(99))} "
              f"{fmt(c.p(50, True) if c.stream else None)} {fmt(c.p(99, True) if c.stream else None)} "
              f"{fmt(c.cpu_ms, 8, 3)} {fmt(c.net_cpu_ms, 6, 3)} {c.non2xx:>6} {c.s5xx:>4} "
              f"{(c.bad_streams if c.stream else '-'):>6} {c.reconnects:>6} {c.client_cpu_s / c.n * 1000:6.3f}")
    print("  cpu ms/r: the proxy's CPU (user+sys, all its processes) per request, read 1.2 s after the case; "
          "net: minus its idle rate over the same time;\n  TTFT: ms to the first body chunk of a stream; "
          "badSSE: 200 streams with < 2 chunks, no final `data: [DONE]` or an error event;\n  reconn: kept "
          "connections the server had closed (request sent again); client: the load generator's own CPU ms/req.")
    for c in cases:
        if c.failures:
            print(f"  {c.target} {c.case}: no answer: {c.failures}")
        odd = {k: v for k, v in c.statuses.items() if k != 200}
        if odd:
            print(f"  {c.target} {c.case}: statuses other than 200: {odd}")


def verdict(ok: Optional[bool]) -> str:
    return "n/a " if ok is None else ("MET " if ok else "MISS")


def summary(res: dict, off: dict) -> None:
    print("\nCortex against the goals")
    d, x = res.get(("direct", "plain c=1")), res.get(("cortex", "plain c=1"))
    if d and x:
        added = x.p(50) - d.p(50)
        print(f"  [{verdict(added < GOALS['added_p50_ms'])}] added p50, plain, c=1:       {added:7.2f} ms  "
              f"(cortex {x.p(50):.2f} - direct {d.p(50):.2f}; goal < {GOALS['added_p50_ms']} ms)")
    d, x = res.get(("direct", "stream c=1")), res.get(("cortex", "stream c=1"))
    if d and x and d.ttfts and x.ttfts:
        added = x.p(50, True) - d.p(50, True)
        print(f"  [{verdict(added < GOALS['added_ttft_ms'])}] added TTFT p50, stream, c=1: {added:7.2f} ms  "
              f"(cortex {x.p(50, True):.2f} - direct {d.p(50, True):.2f}; goal < {GOALS['added_ttft_ms']} ms)")
        added = x.p(50) - d.p(50)
        print(f"         added p50 (whole stream), c=1: {added:7.2f} ms")
    cortex_cases = [(c, "metering on ") for (t, _), c in res.items() if t == "cortex"]
    cortex_cases += [(c, "metering off") for (t, _), c in off.items() if t.startswith("cortex")]
    for c, label in cortex_cases:
        if c.cpu_ms is not None:
            goal = GOALS["cpu_ms"]
            net = c.net_cpu_ms
            print(f"  [{verdict(c.cpu_ms < goal)}] Cortex CPU per request, {c.case:<11} {label}: "
                  f"{c.cpu_ms:6.3f} ms raw  [{verdict(None if net is None else net < goal)}] {fmt(net, 6, 3)} ms "
                  f"net of its idle CPU  (goal < {goal} ms)")
    for k in ("plain c=1", "plain c=32", "stream c=1"):
        x, fa, fr = (res.get((t, k)) for t in ("cortex", "floor asgi", "floor rsgi"))
        if x and fa and fr and None not in (x.net_cpu_ms, fa.net_cpu_ms, fr.net_cpu_ms):
            added = ""
            if k.endswith("c=1") and ("direct", k) in res:  # at c=32 a p50 is mostly queueing
                d = res[("direct", k)].p(50)
                added = f";  added p50: ASGI pass-through {fa.p(50) - d:.2f}, RSGI {fr.p(50) - d:.2f} ms"
            print(f"  where the CPU goes, {k:<10}: granian ASGI pass-through {fa.net_cpu_ms:.3f} ms/req + Cortex's own "
                  f"work {x.net_cpu_ms - fa.net_cpu_ms:.3f} = {x.net_cpu_ms:.3f} net;  RSGI pass-through "
                  f"{fr.net_cpu_ms:.3f}{added}")
    print("  throughput ratios (req/s):")
    for k in ("plain c=1", "plain c=32", "stream c=1", "stream c=32"):
        x = res.get(("cortex", k))
        if not x:
            continue
        parts = []
        for t in ("direct", "nginx", "litellm"):
            o = res.get((t, k))
            if o and o.rps:
                r = x.rps / o.rps
                goal = GOALS["vs_litellm"]
                tag = f" [{verdict(r >= goal)} goal >= {goal:g}x]" if t == "litellm" else ""
                parts.append(f"cortex/{t} {r:5.2f}x{tag}")
        print(f"    {k:<11}  " + "   ".join(parts))
    fives = [c for (t, k), c in {**res, **off}.items() if t.startswith("cortex") and c.stream]
    n5 = sum(c.s5xx for c in fives)
    print(f"  [{verdict(n5 == 0)}] 5xx in Cortex's streamed runs: {n5}  (goal: 0)")
    for c in fives:
        ok = len(c.ttfts) - c.bad_streams
        print(f"         {c.target} {c.case}: {ok}/{c.n} answers streamed (>= 2 chunks, ending `data: [DONE]`, "
              "no error event)")
    on, of = res.get(("cortex", "plain c=1")), off.get(("cortex (meter off)", "plain c=1"))
    on32, of32 = res.get(("cortex", "plain c=32")), off.get(("cortex (meter off)", "plain c=32"))
    if on and of and on32 and of32:
        print("  metering on vs off (plain): "
              f"c=1 p50 {on.p(50):.2f} vs {of.p(50):.2f} ms, CPU {fmt(on.cpu_ms, 5, 3)} vs {fmt(of.cpu_ms, 5, 3)} "
              f"ms/req;  c=32 {on32.rps:.0f} vs {of32.rps:.0f} req/s, CPU {fmt(on32.cpu_ms, 5, 3)} vs "
              f"{fmt(of32.cpu_ms, 5, 3)} ms/req")
        bd, ad = res.get(("direct", "plain c=1")), off.get(("direct (2nd ctr)", "plain c=1"))
        if bd and ad:
            print(f"    (direct baselines, 1st vs 2nd container: c=1 p50 {bd.p(50):.2f} vs {ad.p(50):.2f} ms)")


def code_version() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cortex_app"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted changes under cortex_app/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- main -------------------------------------------------------------------------------------------


CASES = (("plain c=1", 1, False), ("plain c=32", 32, False), ("stream c=1", 1, True), ("stream c=32", 32, True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n1", type=int, default=300, help="requests per case at concurrency 1")
    ap.add_argument("--n32", type=int, default=1000, help="requests per case at concurrency 32")
    args = ap.parse_args()
    host = os.environ.get("DOCKER_HOST")
    if not host:
        print('gateway-bench: DOCKER_HOST is not set: eval "$(scripts/engine.sh up)" first', file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cortex-bench-gw-"))
    console: Optional[Console] = None
    children: list[Child] = []
    res: dict = {}
    off: dict = {}
    owners: dict = {}
    errors: dict = {}
    try:
        nginx_bin = nginx_binary()
        litellm_exe = litellm_binary()
        log("starting the console (make up's way)")
        console = bench_console(tmp, host)
        log(f"console at {console.url} (pgid {console.pid})")
        r = console.call("POST", "/api/models", json=MODEL_BODY)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /api/models: {r.status_code} {r.text}")
        model = r.json()
        r = console.call("POST", "/api/keys", json={"name": "bench"})
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/keys: {r.status_code} {r.text}")
        key = r.json()["key"]
        body = start_model(console, model["id"], key)
        served, mport = body["served_name"], body["host_port"]
        log(f"model {served!r} running, host port {mport}")

        pg = console.pid
        targets = [Target("direct", f"http://127.0.0.1:{mport}", served)]
        if nginx_bin:
            ng, nport = start_nginx(nginx_bin, tmp, mport, children)
            owners["nginx"] = ng
            targets.append(Target("nginx", f"http://127.0.0.1:{nport}", served, cpu=ng.cpu))
        targets.append(Target("cortex", console.url, served, token=key, cpu=lambda: group_cpu_s(pg)))
        for interface in ("asgi", "rsgi"):
            fl, fport = start_floor(interface, tmp, mport, children)
            owners[fl.name] = fl
            targets.append(Target(fl.name, f"http://127.0.0.1:{fport}", served, cpu=fl.cpu))
        if litellm_exe:
            try:
                ll, lport = start_litellm(litellm_exe, tmp, mport, children)
                owners["litellm"] = ll
                targets.append(Target("litellm", f"http://127.0.0.1:{lport}", "tiny", token=LITELLM_KEY, cpu=ll.cpu))
            except RuntimeError as exc:
                log(f"LiteLLM did not start; its target is skipped: {exc}")

        idle = {}
        for t in targets:
            warm_up(t)
            idle[t.name] = idle_rate(t)
            if idle[t.name] is not None:
                log(f"{t.name}: warm; idle CPU {idle[t.name] * 100:.2f} % of one core")
        usage0 = usage_rows(console)
        for name, c, stream in CASES:
            n = args.n1 if c == 1 else args.n32
            for t in targets:
                case = run_case(t, name, n, c, stream, idle.get(t.name))
                res[(t.name, name)] = case
                log(f"{t.name:<8} {name:<11} {case.rps:8.1f} req/s  p50 {case.p(50):7.2f} ms  "
                    f"p99 {case.p(99):7.2f} ms  non-2xx {case.non2xx}  ({time.monotonic() - t_start:.0f} s)")
        time.sleep(1.5)
        usage1 = usage_rows(console)
        cortex_n = sum(c.n for (t, _), c in res.items() if t == "cortex")

        log("restarting the console with CORTEX_GATEWAY_METERING=false (same data dir)")
        for name, ch in owners.items():  # what a proxy said about its own 5xx, before its logs go
            if any(c.s5xx or c.failures for (t, _), c in res.items() if t == name):
                errors[name] = ch.tail(2500)
        for ch in children:  # their upstream goes away with the model
            ch.stop()
        children.clear()
        console.stop()
        console.env["CORTEX_GATEWAY_METERING"] = "false"
        console.start()
        assert console.sign_in(ADMIN, PASSWORD).status_code == 200
        body = start_model(console, model["id"], key)
        mport2 = body["host_port"]
        pg = console.pid
        direct2 = Target("direct (2nd ctr)", f"http://127.0.0.1:{mport2}", served)
        cortex2 = Target("cortex (meter off)", console.url, served, token=key, cpu=lambda: group_cpu_s(pg))
        for t in (direct2, cortex2):
            warm_up(t)
        idle2 = idle_rate(cortex2)
        log(f"cortex (metering off): warm; idle CPU {idle2 * 100:.2f} % of one core")
        usage2 = usage_rows(console)
        for name, c, stream in CASES[:2]:
            n = args.n1 if c == 1 else args.n32
            for t in (direct2, cortex2):
                case = run_case(t, name, n, c, stream, idle2 if t is cortex2 else None)
                off[(t.name, name)] = case
                log(f"{t.name:<18} {name:<11} {case.rps:8.1f} req/s  p50 {case.p(50):7.2f} ms  "
                    f"p99 {case.p(99):7.2f} ms  non-2xx {case.non2xx}  ({time.monotonic() - t_start:.0f} s)")
        time.sleep(1.5)
        usage3 = usage_rows(console)

        print()
        print(f"code: {code_version()}")
        print(f"Gateway benchmark: tiny llama.cpp model ({' '.join(MODEL_BODY['extra_args'])}, -t 1), "
              f"{os.cpu_count()} CPUs, {args.n1} requests at c=1 and {args.n32} at c=32 per case")
        print("idle CPU of the proxies (% of one core): "
              + ", ".join(f"{k} {v * 100:.2f}" for k, v in idle.items() if v is not None)
              + f", cortex (meter off) {idle2 * 100:.2f}")
        print()
        table(list(res.values()) + list(off.values()))
        if None not in (usage0, usage1, usage2, usage3):
            print(f"\nusage records: +{usage1 - usage0} during the metered Cortex cases ({cortex_n} requests); "
                  f"+{usage3 - usage2} with metering off")
        summary(res, off)
        for name, text in errors.items():
            print(f"\n{name} answered 5xx or not at all; its log, last lines:\n{text}")
        bad = [c for c in (*res.values(), *off.values()) if c.target.startswith("cortex") and (c.s5xx or c.failures)]
        if bad:
            print("\nCortex answered 5xx or not at all; the console's log, last lines:")
            print(console.tail(4000))
        print(f"\ntook {time.monotonic() - t_start:.0f} s")
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception:
        if console is not None:
            print("--- console log, last lines ---\n" + console.tail(4000), file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(console, children, host, tmp)


def cleanup(console: Optional[Console], children: list, host: str, tmp: Path) -> None:
    for ch in children:
        try:
            ch.stop()
        except Exception as exc:  # noqa: BLE001
            log(f"could not stop {ch.name} (pid {ch.pid}): {exc}")
    if console is None:  # stopped while `make up` ran: the console it started, by its PID file
        for pidfile in sorted((tmp / "data").glob("run-*/cortex.pid")):
            run_dir, port = pidfile.parent, int(pidfile.parent.name.split("-", 1)[1])
            console = Console(f"http://127.0.0.1:{port}", tmp / "data", run_dir,
                              console_env(tmp / "data", port, run_dir))
    if console is not None:
        try:
            console.stop()
        except Exception as exc:  # noqa: BLE001
            log(f"could not stop the console: {exc}")
        try:
            import docker

            client = docker.DockerClient(base_url=host)
            left = console.remove_containers(client)
            if left:
                log(f"removed {left} container(s) left with the console's label")
            client.close()
        except Exception as exc:  # noqa: BLE001
            log(f"could not clean up containers by label: {exc}")
        console.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
