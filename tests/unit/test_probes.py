"""reconcile/probes.py: concurrent probes with per-probe timeouts against real local
servers (one answers, one says 503, one hangs), and the pure health decision."""

import asyncio
import time

import pytest

from cortex_app.models import Health
from cortex_app.reconcile.probes import HISTORY_LEN, ProbeResult, health_update, loading_probe_interval, probe_many


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _http(status: str):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()
    return handle


async def _hang(reader, writer):
    await asyncio.sleep(30)


def test_probes_run_concurrently_and_time_out_individually():
    async def main():
        ok, ok_port = await _serve(_http("200 OK"))
        loading, loading_port = await _serve(_http("503 Service Unavailable"))
        hang, hang_port = await _serve(_hang)
        targets = [(i, f"http://127.0.0.1:{hang_port}/health") for i in range(20)]
        targets += [(100, f"http://127.0.0.1:{ok_port}/health"), (101, f"http://127.0.0.1:{loading_port}/health"),
                    (102, "http://127.0.0.1:1/health")]
        t0 = time.perf_counter()
        results = await probe_many(targets, timeout=1.0)  # the product's default
        took = time.perf_counter() - t0
        for s in (ok, loading, hang):
            s.close()
        return results, took

    results, took = asyncio.run(main())
    assert took < 4.0, f"20 hanging probes took {took:.2f} s: not concurrent (serial would be 20 s)"
    assert results[100].ok and results[100].latency_ms is not None
    assert not results[101].ok and results[101].status == 503
    assert not results[102].ok and results[102].error
    assert all(not results[i].ok and results[i].error == "TimeoutError" for i in range(20))


FAIL = ProbeResult(1, False, None, status=503)
OK = ProbeResult(1, True, 12.5, status=200)


def test_unhealthy_after_n_failures_and_back():
    h, fails, hist = Health.HEALTHY, 0, []
    for n in range(1, 3):
        u = health_update(h, fails, hist, FAIL, 1000.0 + n, unhealthy_after=3)
        assert u.health is Health.HEALTHY and u.flipped is None and u.consecutive_failures == n
        h, fails, hist = u.health, u.consecutive_failures, u.history
    u = health_update(h, fails, hist, FAIL, 1003.0, unhealthy_after=3)
    assert u.health is Health.UNHEALTHY and u.flipped == "unhealthy: 3 failed health probes in a row (HTTP 503)"
    again = health_update(u.health, u.consecutive_failures, u.history, FAIL, 1004.0, unhealthy_after=3)
    assert again.flipped is None  # one event per flip, not per failure
    back = health_update(again.health, again.consecutive_failures, again.history, OK, 1005.0, unhealthy_after=3)
    assert back.health is Health.HEALTHY and back.flipped == "healthy again" and back.consecutive_failures == 0
    assert back.history[-1] == [1005.0, 12.5] and back.history[-2] == [1004.0, None]


def test_history_is_bounded():
    hist = [[float(i), 1.0] for i in range(HISTORY_LEN)]
    u = health_update(Health.HEALTHY, 0, hist, OK, 9999.0, unhealthy_after=3)
    assert len(u.history) == HISTORY_LEN and u.history[-1][0] == 9999.0 and u.history[0][0] == 1.0


@pytest.mark.parametrize("first", [Health.UNKNOWN, Health.HEALTHY])
def test_first_success_is_healthy_without_an_event_unless_recovering(first):
    u = health_update(first, 0, [], OK, 1.0, unhealthy_after=3)
    assert u.health is Health.HEALTHY and u.flipped is None


@pytest.mark.parametrize("loading_for, every", [
    (0.0, 0.025), (0.3, 0.025), (1.0, 0.05), (4.0, 0.2), (20.0, 1.0), (600.0, 1.0),
])
def test_loading_models_are_probed_often_at_first_then_less(loading_for, every):
    assert loading_probe_interval(loading_for) == pytest.approx(every)
