"""Reference targets for bench/gateway.py (not part of the product): the cheapest pass-through
proxy the console's server can run, to show what a /v1 request costs before any gateway work.

Both forward `POST /v1/...` and `GET /health` to FLOOR_UPSTREAM with the gateway's own engine
client (cortex_app.gateway.upstream), the answer whole or chunk by chunk; no keys, routing,
metering, timeouts or disconnect watch. Served by granian, as the console is:

  asgi_app   granian's ASGI interface: the one the console runs (Reflex speaks ASGI only)
  rsgi_app   granian's RSGI interface: leaner, but it cannot carry the console's pages (its
             websocket accept sets no Sec-WebSocket-Protocol, and Reflex's client sends one)

  python -m granian --interface asgi --workers 1 --port P bench.proxy_floor:asgi_app"""

from __future__ import annotations

import asyncio
import os

from cortex_app.gateway.upstream import Upstream

_clients: dict = {}


def _upstream() -> Upstream:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = Upstream()
    return client


async def _open(method: str, path: str, body: bytes):
    stream = b'"stream":true' in body.replace(b" ", b"")
    return await _upstream().request(os.environ["FLOOR_UPSTREAM"], method, path, body, stream=stream), stream


async def asgi_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    resp, stream = await _open(scope["method"], scope["path"], b"".join(parts))
    try:
        ctype = resp.header(b"content-type") or b"application/json"
        if stream:
            await send({"type": "http.response.start", "status": resp.status, "headers": [(b"content-type", ctype)]})
            async for chunk in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            data = await resp.read()
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
    finally:
        resp.close()


async def rsgi_app(scope, proto) -> None:
    resp, stream = await _open(scope.method, scope.path, await proto())
    try:
        headers = [("content-type", (resp.header(b"content-type") or b"application/json").decode("latin-1"))]
        if stream:
            out = proto.response_stream(resp.status, headers)
            async for chunk in resp.chunks():
                await out.send_bytes(chunk)
        else:
            proto.response_bytes(resp.status, headers, await resp.read())
    finally:
        resp.close()
