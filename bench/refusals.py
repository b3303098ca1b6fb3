"""Benchmark: a key holder over its rate limit cannot freeze or fill the console (issue 24, item 3).

One real console, started as `make up` starts it, on the real engine (DOCKER_HOST), with one
running tiny llama-server model and an inference key limited to 1 request a minute (used up
first, so every request after it is over the limit). Then, in one run:

  quiet     /api/ready asked every 50 ms for QUIET_S, nothing else going on (the reference)
  flood     8 clients, each sending chat completions with 16 MiB bodies with that key, one
            after another, for FLOOD_S; /api/ready asked every 50 ms meanwhile
  floor     the same 8 clients as fast with empty bodies (Content-Length 0): what that many
            refusals a second cost this machine whatever their size; /api/ready meanwhile
  head      each of 8 clients sends only the request's head (Content-Length: 16 MiB) and
            waits for an answer before sending a byte of its body: the answer that comes is
            proof the gateway refused it before reading (let alone parsing) the body

Printed: /api/ready p50/p95/max in each phase and the ratios (flooded/quiet, flooded/floor), the answers the flood got (all
429 expected), how long a refusal took (p50/p95), MiB the clients sent, and the usage rows
written meanwhile (0 expected: a refused key writes none). Everything it started is stopped at
the end (the console stops its model; its containers are removed by label).

Usage (after `make test` set up the venv and the engine; about a minute):
  eval "$(scripts/engine.sh up)" && . scripts/env.sh && python bench/refusals.py
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import docker
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_console, pct, tiny  # noqa: E402

CLIENTS = 8
BODY_BYTES = 16 << 20
QUIET_S = 8.0
FLOOD_S = 15.0
READY_EVERY_S = 0.05


def log(msg: str) -> None:
    print(f"refusals-bench: {msg}", flush=True)


def ready_latencies(url: str, stop: threading.Event, out: list) -> None:
    with httpx.Client(timeout=10) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = c.get(f"{url}/api/ready")
            out.append((time.perf_counter() - t0, r.status_code))
            time.sleep(READY_EVERY_S)


def body(prefix: bytes) -> bytes:
    """A chat request of BODY_BYTES: valid JSON, its one message padded to the size."""
    head = b'{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + prefix + b"x" * (BODY_BYTES - len(head) - len(prefix) - len(tail)) + tail


def request_head(host: str, key: str, length: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def status_of(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def flood(addr: tuple[str, int], key: str, payload: bytes, stop: threading.Event, answers: Counter,
          took: list, sent: list) -> None:
    """One client: the whole 16 MiB request, again and again; the answer's status and time."""
    head = request_head(f"{addr[0]}:{addr[1]}", key, len(payload))
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with socket.create_connection(addr, timeout=30) as s:
                s.sendall(head)
                n = 0
                try:
                    s.sendall(payload)
                    n = len(payload)
                except OSError:
                    pass  # the server answered and closed before taking it all: what we want
                sent.append(n)
                code = status_of(s)
        except OSError as exc:
            code = type(exc).__name__
        answers[code] += 1
        took.append(time.perf_counter() - t0)


def head_only(addr: tuple[str, int], key: str) -> tuple[object, float]:
    """The head alone; the answer before a byte of the body."""
    t0 = time.perf_counter()
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(request_head(f"{addr[0]}:{addr[1]}", key, BODY_BYTES))
        s.settimeout(5)
        try:
            return status_of(s), time.perf_counter() - t0
        except socket.timeout:
            return "no answer before the body", time.perf_counter() - t0


def phase(url: str, addr: tuple[str, int], key: str, payload: bytes) -> tuple[list, Counter, list, list]:
    """CLIENTS flooding `payload` for FLOOD_S, /api/ready asked meanwhile: (its latencies and
    statuses, the flood's answers, how long each took, bytes each sent whole)."""
    ready: list = []
    answers: Counter = Counter()
    took: list = []
    sent: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(addr, key, payload, stop, answers, took, sent))
               for _ in range(CLIENTS)]
    threads.append(threading.Thread(target=ready_latencies, args=(url, stop, ready)))
    for th in threads:
        th.start()
    time.sleep(FLOOD_S)
    stop.set()
    for th in threads:
        th.join(60)
    return ready, answers, took, sent


def usage_rows(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM usage_record").fetchone()[0]


def figures(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50) * 1000:.1f} ms, p95 {pct(xs, 95) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms (n={len(xs)})"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="cortex-refusals-"))
    console = bench_console(work, os.environ["DOCKER_HOST"])
    try:
        r = console.call("POST", "/api/models", json=tiny("tiny"))
        assert r.status_code == 201, r.text
        assert console.start_ready(r.json()["id"])["state"] == "running", console.tail()
        r = console.call("POST", "/api/keys", json={"name": "flooder", "rpm_limit": 1})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        url = console.url
        parts = urlsplit(url)
        addr = (parts.hostname, parts.port)
        first = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                           json={"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        log(f"the key's one request a minute: {first.status_code}")
        db = work / "data" / "cortex.db"
        time.sleep(1.5)  # the meter's flush of that one
        rows_before = usage_rows(db)

        quiet: list = []
        stop = threading.Event()
        t = threading.Thread(target=ready_latencies, args=(url, stop, quiet))
        t.start()
        time.sleep(QUIET_S)
        stop.set()
        t.join()

        loaded, answers, took, sent = phase(url, addr, key, body(b"flood"))
        # The floor: the same 8 clients, as fast, with no body at all (Content-Length 0): what
        # that many refusals a second cost this machine, whatever their size.
        floor, f_answers, _, _ = phase(url, addr, key, b"")

        heads = [head_only(addr, key) for _ in range(CLIENTS)]
        time.sleep(1.5)  # a meter flush: anything it would write is written
        rows_after = usage_rows(db)

        q = [x for x, _ in quiet]
        lo = [x for x, _ in loaded]
        log(f"/api/ready quiet:   {figures(q)}")
        log(f"/api/ready flooded: {figures(lo)}; p95 ratio flooded/quiet {pct(lo, 95) / pct(q, 95):.2f}; "
            f"non-200: {sum(1 for _, c in loaded if c != 200)}")
        log(f"flood: {CLIENTS} clients x 16 MiB bodies for {FLOOD_S:g} s: {sum(answers.values())} requests, "
            f"answers {dict(answers)}; {sum(sent) / (1 << 20):.0f} MiB sent whole; a refusal took {figures(took)}")
        fl = [x for x, _ in floor]
        log(f"floor, {CLIENTS} clients with empty bodies: {sum(f_answers.values())} requests, answers "
            f"{dict(f_answers)}; /api/ready meanwhile {figures(fl)}; flooded/floor p95 {pct(lo, 95) / pct(fl, 95):.2f}")
        log(f"head only (no byte of the body sent): answers {[h[0] for h in heads]}, "
            f"in {figures([h[1] for h in heads])}")
        log(f"usage rows written meanwhile: {rows_after - rows_before}")
        ok = (set(answers) == {429} and set(f_answers) == {429} and all(h[0] == 429 for h in heads) and rows_after == rows_before)
        log("result: " + ("every request 429 before its body, no usage row" if ok else "NOT AS EXPECTED"))
        return 0 if ok else 1
    finally:
        console.stop()
        client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=30)
        console.remove_containers(client)  # what a stop did not (a console that failed)
        client.close()
        console.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
