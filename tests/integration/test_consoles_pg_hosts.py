"""Two full consoles (make up) on one PostgreSQL database, driving models on two real engines:
this machine's and one behind TLS in a network namespace (tests/hostbed.py). One leads the
reconciler for every host; SIGKILL it, and the other reconciles every host within one lease,
adopting what runs (no model stopped or started again) and acting once on what changed
meanwhile."""

from __future__ import annotations

import secrets
import time

import docker
import pytest
from sqlmodel import Session, select

from cortex_app.models import EventKind, ModelEvent
from tests.conftest import INGRESS_IMAGE, LLAMA_IMAGE
from tests.console import launch
from tests.hostbed import remote_host
from tests.integration.conftest import FAST_LLAMA

ADMIN, PASSWORD = "admin", "two-consoles-pass-1"
LEASE_S = 30.0  # the lease's period (reconcile/leader.py): a follower takes over within it


@pytest.fixture
def gpu_box(docker_host):
    with remote_host("cxc-tls", 15, images=(LLAMA_IMAGE, INGRESS_IMAGE), images_from=docker_host) as h:
        yield h


def _state_events(db, model_id: int) -> list[tuple[str, str, str]]:
    with Session(db) as s:
        return [(e.from_state.value if e.from_state else "", e.to_state.value, e.actor) for e in s.exec(
            select(ModelEvent).where(ModelEvent.model_id == model_id, ModelEvent.kind == EventKind.STATE)
            .order_by(ModelEvent.id)).all()]


def test_the_follower_takes_over_every_host_within_one_lease(tmp_path, fresh_postgres_db, docker_host, gpu_box,
                                                             tiny_gguf, docker_client):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    common = dict(CORTEX_DB_URL=fresh_postgres_db, CORTEX_SECRET_KEY=secrets.token_urlsafe(32),
                  DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                  CORTEX_INGRESS_IMAGE=INGRESS_IMAGE,
                  CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)
    a = launch(tmp_path / "a", **common)
    b = None
    remote = docker.DockerClient(base_url=gpu_box.socket, timeout=30)
    try:
        assert a.sign_in(ADMIN, PASSWORD).status_code == 200
        r = a.call("POST", "/api/hosts", json={"name": "box", "endpoint": gpu_box.tls_url,
                                               "tls_ca": gpu_box.pki.ca_pem, "tls_cert": gpu_box.client_cert,
                                               "tls_key": gpu_box.client_key})
        assert r.status_code == 201, r.text
        ids = {}
        for name, host in (("here", "local"), ("there", "box")):
            r = a.call("POST", "/api/models", json={"name": name, "engine": "llamacpp", "image": LLAMA_IMAGE,
                                                    "source": "tiny.gguf", "extra_args": FAST_LLAMA, "host": host})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
            assert a.start_ready(ids[name])["state"] == "running"
        b = launch(tmp_path / "b", **common)  # a follower: it serves, it does not reconcile
        assert b.sign_in(ADMIN, PASSWORD).status_code == 200
        before = {n: a.model(i)["container_id"] for n, i in ids.items()}
        assert b.model(ids["there"])["host_id"] == 2 and b.model(ids["there"])["state"] == "running"

        a.kill()  # SIGKILL: no shutdown policy, the lease's connection dies with it
        # Meanwhile the remote model's container dies on its host: only a leader can see it.
        remote.containers.get(before["there"]).kill()
        t0 = time.monotonic()
        failed = b.wait_model(ids["there"], "failed", timeout=LEASE_S + 10)
        took = time.monotonic() - t0
        print(f"\nleader SIGKILLed -> the follower failed the remote model whose container died: {took:.1f} s "
              f"(lease {LEASE_S:g} s)")
        assert took < LEASE_S, took
        assert "exited with code" in failed["state_reason"], failed
        # The local model was adopted as it ran: same container, never stopped or restarted.
        here = b.model(ids["here"])
        assert here["state"] == "running" and here["container_id"] == before["here"]
        time.sleep(3.0)  # a few of the new leader's passes
        db = b.db()
        try:
            there_events = _state_events(db, ids["there"])
            here_events = _state_events(db, ids["here"])
        finally:
            db.dispose()
        # Exactly one failure recorded (one leader acted), and nothing after it.
        assert [e for e in there_events if e[1] == "failed"] == [("running", "failed", "reconciler")], there_events
        assert there_events[-1][1] == "failed"
        assert here_events[-1] == ("loading", "running", "reconciler"), here_events
        assert [c.id for c in remote.containers.list(filters={"label": "cortex.managed=true"})] == []
        local = [c.id for c in b.containers(docker_client, all=True)]
        assert local == [before["here"]], local
    finally:
        remote.close()
        for c in (b, a):
            if c is not None:
                c.stop()
                c.remove_containers(docker_client)
                c.close()
