"""What anyone on a host's network can get from it: run inside a network namespace that stands
for such a machine (tests/hostbed.outsider). Every TCP port of ADDRESS is tried (a connect
scan); each open one is then asked every route given, over plain HTTP and over TLS without a
client certificate (any server certificate accepted, as an attacker would). Prints one JSON
object: {"open": [ports], "answers": [[port, "http"|"tls", method, path, status or error, head of body]]}.

    python3 tests/portscan.py ADDRESS ROUTES_JSON     (ROUTES_JSON: [[method, path], ...])

Standard library only."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys

CONNECT_TIMEOUT_S = 1.0
CONCURRENCY = 1000


async def _open(address: str, port: int, gate: asyncio.Semaphore) -> bool:
    async with gate:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.transport.abort()
        return True


async def _ask(address: str, port: int, tls: bool, method: str, path: str) -> list:
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    body = b'{"model":"x","prompt":"hi","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
    request = (f"{method} {path} HTTP/1.1\r\nHost: {address}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body) if method == 'POST' else 0}\r\nConnection: close\r\n\r\n").encode()
    request += body if method == "POST" else b""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port, ssl=ctx), 3.0)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(4096), 5.0)
        writer.transport.abort()
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        return [port, "tls" if tls else "http", method, path, type(exc).__name__, ""]
    head = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = head.split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith("HTTP/") and parts[1].isdigit() else head[:40]
    text = answer.split(b"\r\n\r\n", 1)[-1][:200].decode("utf-8", "replace")
    return [port, "tls" if tls else "http", method, path, status, text]


async def main(address: str, routes: list) -> dict:
    gate = asyncio.Semaphore(CONCURRENCY)
    ports = list(range(1, 65536))
    found = await asyncio.gather(*(_open(address, p, gate) for p in ports))
    open_ports = [p for p, ok in zip(ports, found) if ok]
    answers = await asyncio.gather(*(_ask(address, p, tls, m, path) for p in open_ports for tls in (False, True)
                                     for m, path in routes))
    return {"open": open_ports, "answers": answers}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))))
