"""A cap on request bodies, answered before anything reads them: the HTTP API and Reflex's own
routes alike (the console takes no uploads).

Pure ASGI: a declared Content-Length over the cap gets 413 at once (no auth work, no JSON
parsing); a body sent without one is counted as it arrives and cut off at the cap (the route
sees the client go away, and the caller gets 413). A model's configuration is a few KiB.
"""

from __future__ import annotations

import json

MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._too_large(send)
        seen, cut, started = 0, False, False

        async def counted_receive():
            nonlocal seen, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    cut = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                if cut:
                    return  # the route answered a body it never got whole: 413 instead
                started = True
            elif cut and not started:
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await self._too_large(send)

    async def _too_large(self, send) -> None:
        body = json.dumps({"detail": f"the request body is over {self.max_bytes // 1024} KiB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
