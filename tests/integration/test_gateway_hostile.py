"""The gateway's handler (as the console mounts it) in front of a hostile engine: a stand-in,
named as one, for a model server that lies (a host taken over, a broken build). It answers
each request as its prompt says: a body far past any answer, a 100 MB event, a trickle of one
byte at a time that never ends an event, a negative Content-Length, an HTML page, a status
that is no HTTP status; and 1 GiB to a health probe or a metrics scrape. Every request ends
within its deadline as 502 or 504 (an error event, for a stream), and what the console holds
meanwhile stays far under the payloads."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

from cortex_app.reconcile.probes import probe_many, scrape_many
from tests.integration.test_gateway_unreachable import running_at, serving

MiB = 1 << 20
PIECE = b"x" * MiB  # what the stand-in sends again and again: it holds no more than this


async def hostile_engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The hostile-engine stand-in: one answer per connection, chosen by the request's prompt."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET "):  # a probe (/health) or a scrape (/metrics): 1 GiB of answer
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(1024):
                writer.write(b"%x\r\n" % len(PIECE) + PIECE + b"\r\n")
                await writer.drain()
            return
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length")))
        body = await reader.readexactly(length)
        mode = body.split(b'"content": "', 1)[1].split(b'"', 1)[0].decode()
        sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        if mode == "a 1 GiB body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(1024):
                writer.write(b"%x\r\n" % len(PIECE) + PIECE + b"\r\n")
                await writer.drain()
        elif mode == "a 1 GiB Content-Length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
            for _ in range(1024):
                writer.write(PIECE)
                await writer.drain()
        elif mode == "a 100 MB event":
            writer.write(sse + b"%x\r\n" % (100 * MiB) + b"data: ")
            for _ in range(100):
                writer.write(PIECE)
                await writer.drain()
        elif mode == "an event that never ends":
            writer.write(sse)
            for _ in range(100):
                writer.write(b"%x\r\n" % len(PIECE) + PIECE + b"\r\n")
                await writer.drain()
        elif mode == "a trickle":
            writer.write(sse + b"6\r\ndata: \r\n")
            for _ in range(600):
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        elif mode == "a negative Content-Length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n")
        elif mode == "an HTML page":
            page = b"<html>not a completion</html>"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page) + page)
        elif mode == "status 999":
            writer.write(b"HTTP/1.1 999 Whatever\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(30)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the gateway hung up: as it should
    finally:
        writer.close()


CASES = [  # (prompt, stream, status, the error's words)
    ("a 1 GiB body", False, 502, "over 32 MiB"),
    ("a 1 GiB Content-Length", False, 502, "not HTTP"),
    ("a 100 MB event", True, 200, "broke off"),
    ("an event that never ends", True, 200, "over 1 MiB"),
    ("a trickle", True, 200, "nothing more in time"),
    ("a negative Content-Length", False, 502, "not HTTP"),
    ("an HTML page", False, 502, "content type text/html"),
    ("status 999", False, 502, "not HTTP"),
]


def test_a_hostile_engine_cannot_fill_the_console_or_hold_a_request(bed):
    m = bed.llama("hostile")
    timeout = 2.0

    async def main():
        server = await asyncio.start_server(hostile_engine, "127.0.0.1", 0)
        running_at(bed, m.id, server.sockets[0].getsockname()[1])
        out = []
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            # The reconciler's probe and the resources job's scrape read no more than they need.
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            t0 = time.monotonic()
            probed = await probe_many([(m.id, f"{base}/health")], timeout=timeout)
            scraped = await scrape_many([(m.id, f"{base}/metrics")], timeout=timeout)
            out.append(("probe and scrape", (probed, scraped), time.monotonic() - t0,
                        tracemalloc.get_traced_memory()[1] - before))
            async with serving(bed, gateway_timeout_s=timeout) as (_, client):
                for prompt, stream, *_ in CASES:
                    tracemalloc.reset_peak()
                    before = tracemalloc.get_traced_memory()[0]
                    t0 = time.monotonic()
                    r = await client.post("/v1/chat/completions", json={
                        "model": "hostile", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
                    took = time.monotonic() - t0
                    out.append((prompt, r, took, tracemalloc.get_traced_memory()[1] - before))
        finally:
            server.close()
        return out

    tracemalloc.start()
    try:
        results = asyncio.run(main())
    finally:
        tracemalloc.stop()
    _, (probed, scraped), took, held = results.pop(0)
    print(f"\nprobe and scrape of 1 GiB answers: {took:.2f} s, {held / MiB:.1f} MiB held at most")
    assert probed[m.id].ok and scraped == {}, (probed, scraped)  # the status is read; the body is not
    assert took < 2 * timeout and held < 10 * MiB, (took, held)
    for (prompt, stream, status, words), (_, r, took, held) in zip(CASES, results):
        print(f"\n{prompt}: {r.status_code} in {took:.2f} s, {held / MiB:.1f} MiB held at most")
        assert r.status_code == status, (prompt, r.status_code, r.text[:300])
        if stream:  # the stream had begun: its end is an error event
            assert r.text.rstrip().endswith("}") and words in r.text[-400:], (prompt, r.text[-400:])
        else:
            assert words in r.json()["error"]["message"], (prompt, r.text[:300])
        assert took < timeout + 1.5, (prompt, took)
        assert held < 50 * MiB, (prompt, held)

