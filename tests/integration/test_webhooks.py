"""Webhooks end to end: the real llama-server, the reconciler's scheduler, and a real HTTP
receiver that verifies every signature with the standardwebhooks package."""

import time

from standardwebhooks import Webhook

from cortex_app import webhooks
from cortex_app.models import ModelState
from tests.integration.conftest import wait_for
from tests.unit.test_webhooks import Receiver

S = ModelState


def verified(receiver, secret):
    """Every request verified (raises if any signature is wrong), as (id, payload)."""
    return [(h["webhook-id"], Webhook(secret).verify(body, h)) for h, body in receiver.got]


def test_running_then_failed_arrive_signed_within_2s_of_a_kill(bed, docker_client):
    receiver = Receiver()
    ep = webhooks.create_endpoint(bed.db, url=receiver.url, event_types=["model.running", "model.failed"])
    bed.scheduler(reconcile_interval_s=60, docker_events=True)
    m = bed.start_ready(bed.llama().id, actor="admin:test")
    wait_for(lambda: len(receiver.got) >= 1, timeout=5)
    t0 = time.monotonic()
    docker_client.containers.get(m.container_id).kill()
    wait_for(lambda: len(receiver.got) >= 2, timeout=2)
    took = time.monotonic() - t0
    events = verified(receiver, ep.secret)
    assert [p["type"] for _, p in events] == ["model.running", "model.failed"]
    failed = events[1][1]["data"]
    assert failed["exit_code"] == 137 and failed["previous_state"] == "running" and failed["state"] == "failed"
    assert failed["name"] == "tiny" and failed["engine"] == "llamacpp" and failed["url"].endswith(f"/models/{m.id}")
    assert took < 2
    receiver.close()


def test_receiver_down_then_up_and_console_restart_lose_nothing(bed):
    receiver = Receiver("500")
    ep = webhooks.create_endpoint(bed.db, url=receiver.url, event_types=list(webhooks.EVENT_TYPES))
    first = bed.scheduler(reconcile_interval_s=60, docker_events=False)
    a, b = bed.llama("a"), bed.llama("b")
    for model in (a, b):
        bed.start_ready(model.id, actor="t")
        bed.lc.stop(model.id, actor="t")
    wait_for(lambda: len(receiver.got) >= 1, timeout=5)  # it is trying, and failing
    first.stop()  # console restart while deliveries are pending
    receiver.mode = "ok"
    from sqlmodel import Session
    import sqlalchemy as sa
    from cortex_app.models import WebhookDelivery

    with Session(bed.db) as s:  # skip the backoff wait (the restart does not reset it)
        s.execute(sa.update(WebhookDelivery).values(next_attempt_at=webhooks.utcnow()))
        s.commit()
    bed.scheduler(reconcile_interval_s=60, docker_events=False)
    # console.started (x2), then per model: running, stopped
    wait_for(lambda: len({i for i, _ in verified(receiver, ep.secret)}) >= 6, timeout=15)
    events = verified(receiver, ep.secret)
    by_id: dict[str, dict] = {}
    for msg_id, p in events:
        assert by_id.setdefault(msg_id, p) == p, "a retried id must carry the same event"
    per_model = {}
    for msg_id, p in events:
        if p["type"].startswith("model."):
            seq = per_model.setdefault(p["data"]["name"], [])
            if not seq or seq[-1][0] != msg_id:
                seq.append((msg_id, p["type"]))
    assert [t for _, t in per_model["a"]] == ["model.running", "model.stopped"]
    assert [t for _, t in per_model["b"]] == ["model.running", "model.stopped"]
    assert sum(p["type"] == "console.started" for p in by_id.values()) == 2
    receiver.close()
