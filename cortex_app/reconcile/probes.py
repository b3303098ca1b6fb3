"""Health probes: many model endpoints at once, each with its own timeout (httpx, async).

`probe_many` only measures; `health_update` decides, as a pure function, what a round of
results means for one model (healthy <-> unhealthy after N consecutive failures). Probing
never stops or restarts anything by itself.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from dataclasses import dataclass
from typing import Optional, Sequence

import anyio
import httpx

from cortex_app.models import Health

HISTORY_LEN = 120
MAX_SCRAPE_BYTES = 4 << 20  # an engine's /metrics (vLLM's: ~100 KB); past this it is not read on
# While a model loads its /health is probed this often: at first every 25 ms (a tiny model is
# ready in a few hundred ms, and the row should say so at once), then a twentieth of the time
# it has been loading, at most once a second (a 10-minute vLLM load needs no more).
LOADING_PROBE_MIN_S = 0.025
LOADING_PROBE_MAX_S = 1.0
LOADING_PROBE_FRACTION = 0.05
LOADING_PROBE_TIMEOUT_S = 0.5  # a loading model answers at once (503, or nothing listens yet)


def loading_probe_interval(loading_for_s: float) -> float:
    return min(LOADING_PROBE_MAX_S, max(LOADING_PROBE_MIN_S, loading_for_s * LOADING_PROBE_FRACTION))


@dataclass(frozen=True)
class ProbeResult:
    model_id: int
    ok: bool
    latency_ms: Optional[float]
    status: Optional[int] = None
    error: Optional[str] = None


_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, httpx.AsyncClient]]" = \
    weakref.WeakKeyDictionary()


def model_client(tls: Optional[ssl.SSLContext] = None) -> httpx.AsyncClient:
    """The client this event loop reaches model endpoints with (/health, /metrics), made on
    first use and kept: making one costs ~50 ms of CPU (its TLS context), more than a whole
    round of probes. No keep-alive: llama-server closes streamed connections, and a request
    every few seconds gains nothing from reuse. Each caller bounds its own concurrency.
    `tls`: the console's client context for other hosts' ingresses (https:// addresses; it
    trusts the console's CA only); local models are plain http."""
    loop = asyncio.get_running_loop()
    mine = _clients.setdefault(loop, {})
    client = mine.get(id(tls))
    if client is None or client.is_closed:
        client = mine[id(tls)] = httpx.AsyncClient(
            verify=tls if tls is not None else True,
            limits=httpx.Limits(max_keepalive_connections=0, max_connections=None))
        # httpcore loads anyio's event-loop backend on the first request (~40 ms of imports,
        # far more on a busy host): load it now, so that one-time cost is never counted
        # against the first probe's deadline.
        anyio.current_time()
    return client


async def close_model_client() -> None:
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


async def probe_one(client: httpx.AsyncClient, model_id: int, url: str, timeout: float) -> ProbeResult:
    t0 = time.perf_counter()
    try:
        # wait_for bounds the whole exchange, not just each socket read: a server that
        # trickles bytes cannot hold a probe past its timeout.
        status, _ = await asyncio.wait_for(_get(client, url, timeout, 0), timeout=timeout)
    except (httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
        return ProbeResult(model_id, False, None, error=type(exc).__name__)
    latency = (time.perf_counter() - t0) * 1000
    return ProbeResult(model_id, status == 200, latency, status=status)


async def _get(client: httpx.AsyncClient, url: str, timeout: float, keep: int) -> tuple[int, Optional[bytes]]:
    """The status and at most `keep` bytes of the body (None past that: not read on). An engine
    that answers a probe or a scrape with a huge body fills nothing."""
    async with client.stream("GET", url, timeout=timeout) as r:
        if not keep:
            return r.status_code, b""
        body = bytearray()
        async for chunk in r.aiter_bytes():
            body += chunk
            if len(body) > keep:
                return r.status_code, None
        return r.status_code, bytes(body)


async def probe_many(targets: Sequence[tuple[int, str]], *, timeout: float = 1.0,
                     concurrency: int = 100, tls: Optional[ssl.SSLContext] = None) -> dict[int, ProbeResult]:
    """Probe every (model id, url) concurrently, at most `concurrency` at a time (`tls`: see
    model_client)."""
    if not targets:
        return {}
    gate = asyncio.Semaphore(concurrency)
    client = model_client(tls)

    async def gated(mid: int, url: str) -> ProbeResult:
        async with gate:
            return await probe_one(client, mid, url, timeout)

    results = await asyncio.gather(*(gated(mid, url) for mid, url in targets))
    return {r.model_id: r for r in results}


async def scrape_many(targets: Sequence[tuple[int, str]], *, timeout: float = 1.0,
                      concurrency: int = 50, tls: Optional[ssl.SSLContext] = None) -> dict[int, str]:
    """GET every (model id, url) concurrently (the engines' /metrics): the bodies of those
    that answered 200; a model that did not is left out."""
    if not targets:
        return {}
    gate = asyncio.Semaphore(concurrency)
    client = model_client(tls)

    async def one(mid: int, url: str):
        async with gate:
            try:
                status, body = await asyncio.wait_for(_get(client, url, timeout, MAX_SCRAPE_BYTES), timeout=timeout)
            except (httpx.HTTPError, asyncio.TimeoutError, OSError):
                return mid, None
            return mid, body.decode("utf-8", errors="replace") if status == 200 and body is not None else None

    results = await asyncio.gather(*(one(mid, url) for mid, url in targets))
    return {mid: text for mid, text in results if text is not None}


@dataclass(frozen=True)
class HealthUpdate:
    health: Health
    consecutive_failures: int
    latency_ms: Optional[float]
    history: list
    flipped: Optional[str] = None  # the event's reason when health changed


def health_update(current: Health, failures: int, history: list, result: ProbeResult, now_ts: float,
                  unhealthy_after: int) -> HealthUpdate:
    history = (list(history) + [[round(now_ts, 3), round(result.latency_ms, 2) if result.ok else None]])[-HISTORY_LEN:]
    if result.ok:
        flipped = "healthy again" if current == Health.UNHEALTHY else None
        return HealthUpdate(Health.HEALTHY, 0, result.latency_ms, history, flipped)
    failures += 1
    if failures >= unhealthy_after and current != Health.UNHEALTHY:
        why = f"HTTP {result.status}" if result.status else (result.error or "no answer")
        return HealthUpdate(Health.UNHEALTHY, failures, None, history,
                            f"unhealthy: {failures} failed health probes in a row ({why})")
    return HealthUpdate(current, failures, None, history)
