"""gateway/upstream.py against real local HTTP servers (asyncio): bodies by length, chunked and
until close; kept connections reused; a kept connection the server closed replaced once; a
stream's connection never kept; a server that breaks off mid-body is an error, not a hang."""

import asyncio

import pytest

from cortex_app.gateway.upstream import Upstream, UpstreamError


class Server:
    """Counts connections; `answer(request) -> bytes` writes the response; `close_after`
    closes each connection after that many responses."""

    def __init__(self, answer, close_after=None):
        self.answer, self.close_after, self.connections, self.requests = answer, close_after, 0, 0

    async def handle(self, reader, writer):
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
                body = await reader.readexactly(length)
                self.requests += 1
                out = self.answer(body)
                if out is None:
                    writer.transport.abort()
                    return
                writer.write(out)
                await writer.drain()
                served += 1
                if self.close_after and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def plain(body=b'{"ok":1}'):
    return lambda req: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)


def sse(events):
    def answer(req):
        out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n"
        for e in events:
            out += b"%x\r\n%s\r\n" % (len(e), e)
        return out + b"0\r\n\r\n"
    return answer


def run(coro):
    return asyncio.run(coro)


def test_plain_answers_reuse_one_connection():
    async def main():
        async with Server(plain()) as s:
            up = Upstream()
            for _ in range(3):
                r = await up.request(s.url, "POST", "/v1/x", b"{}", stream=False)
                assert r.status == 200 and await r.read() == b'{"ok":1}'
            return s.connections
    assert run(main()) == 1


def test_chunked_stream_comes_chunk_by_chunk_and_its_connection_is_not_kept():
    events = [b"data: {\"a\":1}\n\n", b"data: {\"a\":2}\n\n", b"data: [DONE]\n\n"]

    async def main():
        async with Server(sse(events)) as s:
            up = Upstream()
            r = await up.request(s.url, "POST", "/v1/x", b"{}", stream=True)
            got = [c async for c in r.chunks()]
            r2 = await up.request(s.url, "POST", "/v1/x", b"{}", stream=True)
            await r2.read()
            return got, s.connections
    got, connections = run(main())
    assert got == events and connections == 2


def test_a_kept_connection_the_server_closed_is_replaced_once():
    async def main():
        async with Server(plain(), close_after=1) as s:  # closes after each answer, saying nothing
            up = Upstream()
            for _ in range(3):
                r = await up.request(s.url, "POST", "/", b"{}", stream=False)
                assert await r.read() == b'{"ok":1}'
            return s.connections, s.requests
    connections, requests = run(main())
    assert connections == 3 and requests == 3  # never sent twice to a server that saw it


def test_refused_connection_is_a_connect_error():
    async def main():
        with pytest.raises(UpstreamError) as e:
            await Upstream().request("http://127.0.0.1:1", "POST", "/", b"{}", stream=False)
        return e.value
    err = run(main())
    assert err.connect and not err.retryable


def test_a_server_that_breaks_off_mid_body_is_an_error():
    def broken(req):
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"  # then closes

    async def main():
        async with Server(broken, close_after=1) as s:
            r = await Upstream().request(s.url, "POST", "/", b"{}", stream=True)
            seen = []
            with pytest.raises(UpstreamError):
                async for c in r.chunks():
                    seen.append(c)
            return seen
    assert run(main()) == [b"hello"]


def test_body_until_close_and_connection_close_header():
    def until_close(req):
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"

    async def main():
        async with Server(until_close, close_after=1) as s:
            up = Upstream()
            r = await up.request(s.url, "POST", "/", b"{}", stream=False)
            assert await r.read() == b"all of it"
            assert not up._idle.get(("127.0.0.1", int(s.url.rsplit(":", 1)[1])))
    run(main())


def test_a_fresh_connection_closed_without_an_answer_is_not_sent_again():
    """The engine took the request and died before answering: it may have worked on it, so the
    client gets the error and the engine never sees the request twice."""
    async def main():
        async with Server(lambda req: None) as s:  # reads the request, then drops the connection
            with pytest.raises(UpstreamError) as e:
                await Upstream().request(s.url, "POST", "/", b"{}", stream=False)
            return e.value, s.requests
    err, requests = run(main())
    assert not err.connect and not err.retryable and requests == 1


def test_an_answer_that_is_not_http_is_an_upstream_error():
    for answer in (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", b"SSH-2.0-OpenSSH\r\n\r\n"):
        async def main():
            async with Server(lambda req: answer, close_after=1) as s:
                with pytest.raises(UpstreamError):
                    await Upstream().request(s.url, "POST", "/", b"{}", stream=False)
        run(main())
