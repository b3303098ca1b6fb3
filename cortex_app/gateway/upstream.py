"""The gateway's HTTP/1.1 client to model servers: plain asyncio streams, kept connections per
server, nothing else.

Why not httpx here (probes and webhooks use it): the gateway pays its client on every
request, and httpx's layers cost ~1 ms of CPU per request on these machines, the whole
budget for a proxy hop. This speaks exactly what the engines answer: a status line, headers,
then a body by Content-Length, chunked, or until close.

Kept connections: llama-server says `Keep-Alive` on streamed responses and then closes the
connection, so a connection that carried a stream is never kept; any other kept connection
the server closed meanwhile is found dead before use or fails before a single response byte,
and the request is then sent once more on a fresh connection (`UpstreamError.retryable`)."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Optional
from urllib.parse import urlsplit

# A connection that does not open in this long is given up (another replica, or 502): an engine
# that answers opens one in milliseconds, even on another host; a silent host never does.
CONNECT_TIMEOUT_S = 2.0
IDLE_CLOSE_RACE_S = 1.0  # a kept connection that fails sooner than this was closed idle
MAX_IDLE_PER_SERVER = 64
_READ_LIMIT = 1 << 20  # the longest header block or chunk-size line accepted
# What an engine may send, at most (a hostile or broken one fills no memory): a whole answer
# (a batch of embeddings is the largest), and one SSE event or HTTP chunk of a stream.
SMALL_REQUEST_BYTES = 64 << 10  # fits an idle connection's buffers at once
LARGE_REQUEST_ACK_S = 30.0
MAX_ANSWER_BYTES = 32 << 20
MAX_EVENT_BYTES = 1 << 20


def _why_not(exc: BaseException) -> str:
    """Why a connection did not open, without the engine's address (OSError's text names it, and
    a 502 goes to whoever holds a key: where the engines listen is the console's business)."""
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:  # TCP_USER_TIMEOUT, or the kernel's own
        return f"what was sent was not acknowledged within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # wait_for's
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, ssl.SSLError):  # another host's ingress: its certificate, or the handshake
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    code = errno.errorcode.get(exc.errno) if isinstance(exc, OSError) and exc.errno else None
    return code or type(exc).__name__


def _ack_within(writer, data: bytes) -> None:
    """A request the server's machine does not even acknowledge within CONNECT_TIMEOUT_S (its
    host went silent under a kept connection) fails then, not at the gateway's timeout
    (TCP_USER_TIMEOUT). An engine busy generating acknowledges all the same; one too busy to
    read its socket stops acknowledging only once its buffers are full, which a small request
    never fills: a large one gets LARGE_REQUEST_ACK_S."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    within = CONNECT_TIMEOUT_S if len(data) <= SMALL_REQUEST_BYTES else LARGE_REQUEST_ACK_S
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(within * 1000))


@dataclass(frozen=True)
class _Server:
    host: str
    port: int
    netloc: bytes
    prefix: bytes  # the base URL's path: where the model is on its host's ingress (b"" here)
    tls: Optional[ssl.SSLContext]


class UpstreamError(Exception):
    """The model's server could not be reached, or broke the exchange.

    `connect`: no connection could be made (the request was never sent).
    `silent`: the connection did not open within CONNECT_TIMEOUT_S (no refusal: nothing at all
    answered): trying again at once would wait as long again.
    `retryable`: a kept connection failed at once with no byte of an answer: the server had
    closed it while idle, so sending the request again on a fresh one is safe."""

    def __init__(self, message: str, *, connect: bool = False, retryable: bool = False, silent: bool = False):
        super().__init__(message)
        self.connect, self.retryable, self.silent = connect, retryable, silent


class Response:
    """A response whose headers are read; the body is read with `read()` or `chunks()`."""

    def __init__(self, client: "Upstream", key, reader, writer, status: int, headers: list, reuse: bool):
        self._client, self._key, self._reader, self._writer = client, key, reader, writer
        self.status, self.headers = status, headers
        self._reuse = reuse
        self._done = False
        te = self.header(b"transfer-encoding")
        length = self.header(b"content-length")
        self._chunked = te is not None and b"chunked" in te.lower()
        self._length = int(length) if length is not None and not self._chunked else None
        if self._length is not None and not 0 <= self._length <= MAX_ANSWER_BYTES:
            raise ValueError(f"Content-Length {self._length}")  # the caller: "not HTTP", 502

    def header(self, name: bytes) -> Optional[bytes]:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    async def chunks(self, max_chunk: int = MAX_ANSWER_BYTES) -> AsyncIterator[bytes]:
        """The body as the server sends it: one piece per HTTP chunk (an SSE event, for the
        engines), without waiting for more; an HTTP chunk over `max_chunk` is refused unread."""
        r = self._reader
        try:
            if self._chunked:
                while True:
                    line = await r.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0], 16)
                    if not 0 <= size <= max_chunk:
                        raise ValueError(f"a chunk of {size} bytes")
                    if size == 0:
                        while await r.readuntil(b"\r\n") != b"\r\n":  # trailers
                            pass
                        break
                    data = await r.readexactly(size + 2)
                    yield data[:-2]
            elif self._length is not None:
                left = self._length
                while left:
                    data = await r.read(min(left, 65536))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(data)
                    yield data
            else:
                self._reuse = False
                while data := await r.read(65536):
                    yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            self.close()  # OSError: a reset, or ETIMEDOUT (TCP_USER_TIMEOUT)
            raise UpstreamError(f"the model's server broke off its answer ({type(exc).__name__})") from None
        self._done = True
        self.release()

    async def read(self) -> bytes:
        """The whole body (UpstreamError past MAX_ANSWER_BYTES)."""
        if self._length is not None:  # the common answer: one read, no generator
            try:
                data = await self._reader.readexactly(self._length)
            except (asyncio.IncompleteReadError, OSError) as exc:
                self.close()
                raise UpstreamError(f"the model's server broke off its answer ({type(exc).__name__})") from None
            self._done = True
            self.release()
            return data
        parts, size = [], 0
        async for c in self.chunks():
            size += len(c)
            if size > MAX_ANSWER_BYTES:
                self.close()
                raise UpstreamError(f"the model's answer is over {MAX_ANSWER_BYTES >> 20} MiB")
            parts.append(c)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Keep the connection for the next request if the exchange ended cleanly, else close it."""
        if self._writer is None:
            return
        if self._done and self._reuse:
            self._client._keep(self._key, self._reader, self._writer)
        else:
            self._writer.close()
        self._writer = None

    def close(self) -> None:
        """Drop the connection (a client that went away: the server sees it close and stops)."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None


class Upstream:
    def __init__(self, tls: Optional[Callable[[], ssl.SSLContext]] = None) -> None:
        """`tls`: gives the client context for https:// servers (other hosts' ingresses), on
        first need."""
        self._tls = tls
        self._idle: dict[tuple[str, int, bytes], list] = {}
        self._servers: dict[str, _Server] = {}

    def _server(self, base_url: str) -> "_Server":
        known = self._servers.get(base_url)
        if known is None:
            parts = urlsplit(base_url)
            secure = parts.scheme == "https"
            host, port = parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80)
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if secure and self._tls is None:
                raise UpstreamError("no TLS client context for another host's ingress", connect=True)
            known = self._servers[base_url] = _Server(host, port, netloc.encode(), parts.path.rstrip("/").encode(),
                                                      self._tls() if secure else None)
        return known

    def _keep(self, key, reader, writer) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_SERVER:
            idle.append((reader, writer))
        else:
            writer.close()

    def _take(self, key):
        idle = self._idle.get(key)
        while idle:
            reader, writer = idle.pop()
            if not (reader.at_eof() or writer.is_closing()):
                return reader, writer
            writer.close()
        return None

    async def request(self, base_url: str, method: str, path: str, body: bytes, *, stream: bool) -> Response:
        """Send the request and read the response's headers. A kept connection that turns out
        closed is replaced by a fresh one once (the server never saw the request). `stream`:
        the connection is not kept afterwards (llama-server closes it after a stream)."""
        server = self._server(base_url)
        key = (server.host, server.port, server.prefix)
        head = (f"{method} ".encode() + server.prefix + f"{path} HTTP/1.1\r\nHost: ".encode() + server.netloc
                + b"\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n")
        kept = self._take(key)
        if kept is not None:
            try:
                return await self._exchange(key, *kept, head + body, stream, kept=True)
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
        try:
            # TLS (another host's ingress): its handshake is part of the connection's bound.
            opening = (asyncio.open_connection(server.host, server.port, limit=_READ_LIMIT) if server.tls is None
                       else asyncio.open_connection(server.host, server.port, limit=_READ_LIMIT, ssl=server.tls,
                                                    server_hostname=server.host))
            reader, writer = await asyncio.wait_for(opening, CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to the model's server ({_why_not(exc)})", connect=True,
                                silent=isinstance(exc, (TimeoutError, asyncio.TimeoutError))) from None
        return await self._exchange(key, reader, writer, head + body, stream, kept=False)

    async def _exchange(self, key, reader, writer, data: bytes, stream: bool, kept: bool) -> Response:
        t0 = time.monotonic()
        _ack_within(writer, data)
        try:
            writer.write(data)
            block = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            writer.transport.abort()
            partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            # Sent again only where the server cannot have worked on it: a kept connection it
            # had closed while idle fails at once, with not a byte of an answer. An engine that
            # dies while generating fails later, and its request is not sent twice.
            raise UpstreamError(f"the model's server closed the connection ({type(exc).__name__})",
                                retryable=kept and not partial and time.monotonic() - t0 < IDLE_CLOSE_RACE_S
                                ) from None
        except OSError as exc:  # ETIMEDOUT: not acknowledged within TCP_USER_TIMEOUT
            writer.transport.abort()
            raise UpstreamError(f"the model's server stopped answering ({_why_not(exc)})", silent=True) from None
        except BaseException:
            writer.transport.abort()
            raise
        try:
            lines = block.split(b"\r\n")
            version, code = lines[0].split(b" ", 2)[:2]
            status = int(code)
            if not 200 <= status <= 599 or not version.startswith(b"HTTP/1."):
                raise ValueError(f"status {status}")
            headers = []
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(b":")
                    headers.append((name.strip().lower(), value.strip()))
            resp = Response(self, key, reader, writer, status, headers, reuse=not stream and version == b"HTTP/1.1")
        except ValueError:  # no status line, a bad status or Content-Length
            writer.transport.abort()
            raise UpstreamError("the model's server answered something that is not HTTP") from None
        conn = resp.header(b"connection")
        if conn is not None and conn.lower() == b"close":
            resp._reuse = False
        return resp

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()
