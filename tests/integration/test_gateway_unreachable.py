"""The gateway's handler (the ASGI app the console mounts in front of /v1) when a running
model's engine goes away behind the console's back: the kept connection is found dead and
the request tried once more on a fresh one, the client gets 502 in OpenAI's shape, and the
reconciler counts a failed probe. Real llama-server, real Docker; no reconciler running, so
the row still says `running` when the request comes."""

import asyncio
import contextlib
import dataclasses
import socket
import time

import httpx
import sqlalchemy as sa
from sqlmodel import Session

from cortex_app.gateway import keys as keymod
from cortex_app.gateway.service import Gateway, GatewayASGI
from cortex_app.models import Model, ModelState


@contextlib.asynccontextmanager
async def serving(bed, **settings):
    """The gateway's handler as the console mounts it, started, with a client holding a key."""
    _, key = keymod.create_key(bed.db, "t")
    gateway = Gateway(bed.db, bed.lc, bed.rec, dataclasses.replace(bed.settings, **settings))
    app = GatewayASGI(None)
    app._gateway = gateway
    await gateway.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console",
                                     headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            yield gateway, client
    finally:
        await gateway.stop()


def running_at(bed, model_id: int, port: int, container_id: str = "c0ffee") -> None:
    """The row as the reconciler would have it for a server of the test's own on `port`:
    running there (no container behind it)."""
    with Session(bed.db) as s:
        s.execute(sa.update(Model).where(Model.id == model_id).values(
            state=ModelState.RUNNING, container_id=container_id, host_port=port))
        s.commit()


def test_an_engine_gone_behind_the_consoles_back_is_502_and_a_failed_probe(bed, docker_client):
    m = bed.llama("gone")
    bed.start_ready(m.id)
    body = {"model": "gone", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def main():
        async with serving(bed) as (gateway, client):
            ok = await client.post("/v1/chat/completions", json=body)
            assert ok.status_code == 200, ok.text
            kept = sum(len(v) for v in gateway._upstream()._idle.values())
            assert kept == 1  # the plain answer's connection is kept for the next request
            await asyncio.to_thread(lambda: docker_client.containers.get(bed.row(m.id).container_id).kill())
            gone = await client.post("/v1/chat/completions", json=body)
            await asyncio.sleep(0.5)  # the failed probe is written off the request path
            return gone

    gone = asyncio.run(main())
    assert gone.status_code == 502, gone.text
    err = gone.json()["error"]
    assert err["code"] == "upstream_unreachable" and "did not answer" in err["message"]
    # Where the engine listened is not the key holder's business (asyncio's own text named it).
    assert "connection refused" in err["message"], err
    assert "127.0.0.1" not in gone.text and f":{bed.row(m.id).host_port}" not in gone.text, gone.text
    with Session(bed.db) as s:
        row = s.get(Model, m.id)
    assert row.consecutive_failures == 1 and row.probe_history[-1][1] is None


def test_an_engine_that_never_answers_is_504_after_the_gateway_timeout(bed):
    """A running model whose server accepts the request and then says nothing (a hung engine):
    504 after CORTEX_GATEWAY_TIMEOUT, in OpenAI's shape."""
    m = bed.llama("hung")

    async def hang(reader, writer):
        await asyncio.sleep(30)

    async def main():
        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        running_at(bed, m.id, server.sockets[0].getsockname()[1])
        try:
            async with serving(bed, gateway_timeout_s=1.0) as (_, client):
                t0 = time.monotonic()
                r = await client.post("/v1/chat/completions", json={"model": "hung", "messages": []})
                return r, time.monotonic() - t0
        finally:
            server.close()

    r, took = asyncio.run(main())
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout", r.text
    assert 1.0 <= took < 5.0


def test_a_replica_that_refuses_the_connection_is_skipped_for_another(bed):
    """Two replicas of one alias whose rows say running (no reconciler here to say otherwise):
    one's server refuses connections. Every request by the alias is answered by the other;
    the refusing one counts a failed probe, and for a while gets no new request at all."""
    good = bed.llama("good", alias="team")
    bed.start_ready(good.id)
    gone = bed.llama("gone", alias="team")
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    running_at(bed, gone.id, dead_port, container_id="deadbeef")
    body = {"model": "team", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def main():
        async with serving(bed) as (gateway, client):
            answers = [await client.post("/v1/chat/completions", json=body) for _ in range(6)]
            await asyncio.sleep(0.5)  # the failed probe is written off the request path
            assert gateway._inflight == {}  # every request let go of its replica, the refused one too
            return answers, dict(gateway._benched), dict(gateway._last)

    answers, benched, picked = asyncio.run(main())
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert list(benched) == [gone.id]
    # Taking turns, `gone` had the second request (and refused it); passed over since: it was
    # never picked again (its last pick is still the second of them all).
    assert picked[gone.id] == 2 and picked[good.id] > 2
    with Session(bed.db) as s:
        assert s.get(Model, gone.id).consecutive_failures == 1  # one refusal, not one per request
        assert s.get(Model, good.id).consecutive_failures == 0
