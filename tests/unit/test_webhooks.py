"""webhooks.py: signatures checked by the standardwebhooks package (an independent
implementation of the spec), payload shapes, URL checks, and delivery faults against real
local receivers (refused connection, a hang, a 10 MB answer, a 500)."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from standardwebhooks import Webhook, WebhookVerificationError

from cortex_app import webhooks
from cortex_app.models import ModelState, WebhookAttempt, WebhookDelivery
from tests.conftest import free_port


def signed(secret, body: bytes, msg_id="msg_1", ts=None):
    ts = int(time.time()) if ts is None else ts
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": webhooks.sign(secret, msg_id, ts, body)}


def test_signature_verifies_with_the_standard_library():
    secret = webhooks.new_secret()
    body = b'{"type":"model.failed","data":{"name":"tiny"}}'
    assert Webhook(secret).verify(body, signed(secret, body)) == json.loads(body)


@pytest.mark.parametrize("tamper", ["body", "secret", "id", "timestamp"])
def test_tampering_fails_verification(tamper):
    secret = webhooks.new_secret()
    body = b'{"type":"model.failed"}'
    headers = signed(secret, body)
    if tamper == "body":
        body = b'{"type":"model.running"}'
    elif tamper == "secret":
        secret = webhooks.new_secret()
    elif tamper == "id":
        headers["webhook-id"] = "msg_2"
    else:
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("url", ["ftp://h/x", "file:///etc/passwd", "http://", "receiver/hook", "", "x" * 3000,
                                 "http://0251.0376.0251.0376/"])  # octal 169.254.169.254: httpx refuses it
def test_only_http_urls(url):
    with pytest.raises(webhooks.EndpointInvalid):
        webhooks.check_url(url)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://2852039166/", "http://0xa9fea9fe/",
    "http://169.254.169.254./", "http://[fe80::1]/", "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/computeMetadata/v1/", "http://METADATA.google.internal./", "http://[fd00:ec2::254]/",
    "http://100.100.100.200/latest/meta-data/", "http://168.63.129.16/machine",
])
def test_no_webhook_to_a_metadata_service(url):
    with pytest.raises(webhooks.EndpointInvalid, match="webhooks may not go there"):
        webhooks.check_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "https://hooks.example.com/x", "http://10.0.0.5/h",
                                 "http://[::1]:8080/", "http://receiver:8080/hook"])
def test_ordinary_receivers_pass(url):
    assert webhooks.check_url(url) == url


def test_an_endpoint_saved_before_the_check_is_never_sent_to():
    async def attempt():
        async with httpx.AsyncClient() as client:
            return await webhooks.send(client, "http://169.254.169.254/latest/", webhooks.new_secret(), "msg_1", {})

    out = asyncio.run(attempt())
    assert not out.ok and out.status_code is None and "link-local" in out.error


def test_a_name_that_resolves_to_a_metadata_address_is_refused_at_send(monkeypatch):
    async def resolve(host, port, *a, **kw):  # the loop's resolver, as a DNS record of one's own would answer
        assert host == "hooks.attacker.example"
        return [(2, 1, 6, "", ("169.254.169.254", 0))]

    async def attempt():
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
        async with httpx.AsyncClient() as client:
            return await webhooks.send(client, "http://hooks.attacker.example/h", webhooks.new_secret(), "m", {})

    out = asyncio.run(attempt())
    assert not out.ok and "link-local" in out.error


def test_payloads():
    data = webhooks.model_event_data(model_id=3, name="tiny", served_name="tiny-chat", engine="llamacpp",
                                     previous=ModelState.RUNNING, state=ModelState.FAILED,
                                     reason="its container exited with code 137", public_url="http://c:3000/")
    std = webhooks.payload("standard", "model.failed", webhooks.utcnow(), data)
    assert std["type"] == "model.failed" and std["data"]["exit_code"] == 137
    assert std["data"]["url"] == "http://c:3000/models/3" and std["data"]["previous_state"] == "running"
    slack = webhooks.payload("slack", "model.failed", webhooks.utcnow(), data)
    assert slack == {"text": ":red_circle: model *tiny*: failed — its container exited with code 137 "
                             "(<http://c:3000/models/3|open>)"}


class Receiver:
    """A real HTTP receiver on loopback whose behaviour a test sets."""

    def __init__(self, mode="ok"):
        self.mode, self.got, self.arrivals = mode, [], []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.arrivals.append(time.perf_counter())
                outer.got.append((dict(self.headers), body))
                if outer.mode == "hang":
                    time.sleep(8)
                if outer.mode == "huge":
                    self.send_response(200)
                    self.send_header("content-length", str(10 * 1024 * 1024))
                    self.end_headers()
                    try:
                        self.wfile.write(b"x" * (10 * 1024 * 1024))
                    except OSError:
                        pass
                    return
                self.send_response(500 if outer.mode == "500" else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def db(migrated_db):
    return migrated_db


def _queue(db, url, n=1):
    ep = webhooks.create_endpoint(db, url=url, event_types=["model.failed"])
    with Session(db) as s:
        for i in range(n):
            webhooks.enqueue(s, "model.failed", {"name": "m", "n": i}, model_id=1)
        s.commit()
    return ep


@pytest.mark.parametrize("mode, error", [("refused", "ConnectError"), ("hang", "timed out"), ("500", "HTTP 500")])
def test_failures_are_recorded_and_retried_later(db, mode, error):
    receiver = None
    if mode == "refused":
        url = f"http://127.0.0.1:{free_port()}/hook"
    else:
        receiver = Receiver(mode)
        url = receiver.url
    _queue(db, url)
    t0 = time.perf_counter()
    asyncio.run(webhooks.Deliverer(db).deliver_due())
    assert time.perf_counter() - t0 < webhooks.TIMEOUT_S + 2
    with Session(db) as s:
        d = s.exec(select(WebhookDelivery)).one()
        [a] = s.exec(select(WebhookAttempt)).all()
    assert d.status == "pending" and d.attempts == 1 and error in d.last_error and error in a.error
    assert d.next_attempt_at > webhooks.utcnow()  # backoff: not again at once
    if receiver:
        receiver.close()


def test_a_10mb_answer_is_not_read_and_counts_by_status(db):
    receiver = Receiver("huge")
    _queue(db, receiver.url)
    asyncio.run(webhooks.Deliverer(db).deliver_due())
    with Session(db) as s:
        d = s.exec(select(WebhookDelivery)).one()
    assert d.status == "delivered" and d.last_status_code == 200
    receiver.close()


def test_order_within_a_model_and_no_duplicates(db):
    receiver = Receiver("500")
    _queue(db, receiver.url, n=5)
    deliverer = webhooks.Deliverer(db)
    asyncio.run(deliverer.deliver_due())
    assert len(receiver.got) == 1  # the first failed: the other four wait behind it
    receiver.mode = "ok"
    with Session(db) as s:
        s.execute(sa.update(WebhookDelivery).values(next_attempt_at=webhooks.utcnow()))
        s.commit()
    asyncio.run(deliverer.deliver_due())
    bodies = [json.loads(b)["data"]["n"] for _, b in receiver.got]
    ids = [h["webhook-id"] for h, _ in receiver.got]
    assert bodies == [0, 0, 1, 2, 3, 4]
    assert ids[0] == ids[1] and len(set(ids[1:])) == 5  # a retry keeps its id; no event twice otherwise
    receiver.close()


def test_gives_up_after_the_last_attempt(db):
    _queue(db, f"http://127.0.0.1:{free_port()}/hook")
    deliverer = webhooks.Deliverer(db)
    for _ in range(webhooks.MAX_ATTEMPTS):
        with Session(db) as s:
            s.execute(sa.update(WebhookDelivery).values(next_attempt_at=webhooks.utcnow()))
            s.commit()
        asyncio.run(deliverer.deliver_due())
    with Session(db) as s:
        d = s.exec(select(WebhookDelivery)).one()
    assert d.status == "failed" and d.attempts == webhooks.MAX_ATTEMPTS
    assert sum(webhooks.BACKOFF_S) > 45 * 60  # about an hour of retries before that
    webhooks.redeliver(db, d.id)
    with Session(db) as s:
        assert s.exec(select(WebhookDelivery.status)).one() == "pending"


def test_disabled_or_unsubscribed_endpoints_get_nothing(db):
    ep = webhooks.create_endpoint(db, url="http://127.0.0.1:9/x", event_types=["model.running"])
    filtered = webhooks.create_endpoint(db, url="http://127.0.0.1:9/y", event_types=["model.failed"],
                                        model_ids=[7])
    with Session(db) as s:
        assert webhooks.enqueue(s, "model.failed", {}, model_id=1) == 0
        assert webhooks.enqueue(s, "model.failed", {}, model_id=7) == 1
        s.commit()
    assert ep.secret.startswith("whsec_") and filtered.id


def test_a_url_httpx_refuses_is_refused_at_once():
    with pytest.raises(webhooks.EndpointInvalid):
        webhooks.check_url("http://exa\x00mple.com/")


def test_one_bad_row_does_not_stop_the_others(db):
    good = Receiver()
    _queue(db, good.url)
    with Session(db) as s:  # a row whose URL got past older checks
        bad = webhooks.create_endpoint(db, url="http://127.0.0.1:9/x", event_types=["model.failed"])
        s.execute(sa.update(webhooks.WebhookEndpoint).where(webhooks.WebhookEndpoint.id == bad.id)
                  .values(url="http://exa\x00mple.com/"))
        s.commit()
        webhooks.enqueue(s, "model.failed", {"name": "m"}, model_id=2)
        s.commit()
    asyncio.run(webhooks.Deliverer(db).deliver_due())
    with Session(db) as s:
        rows = {d.endpoint_id: d for d in s.exec(select(WebhookDelivery)).all()}
    assert len(good.got) == 2  # both events reached the good endpoint
    assert rows[bad.id].status == "pending" and rows[bad.id].attempts == 1
    assert "InvalidURL" in rows[bad.id].last_error
    good.close()


def test_a_disabled_endpoint_waits_and_a_deleted_one_takes_its_rows(db):
    receiver = Receiver()
    ep = _queue(db, receiver.url)
    webhooks.toggle_endpoint(db, ep.id)
    asyncio.run(webhooks.Deliverer(db).deliver_due())
    assert receiver.got == [] and webhooks.get_endpoint(db, ep.id).enabled is False
    webhooks.toggle_endpoint(db, ep.id)
    asyncio.run(webhooks.Deliverer(db).deliver_due())
    assert len(receiver.got) == 1
    webhooks.delete_endpoint(db, ep.id)
    with Session(db) as s:
        assert s.exec(select(WebhookDelivery)).all() == [] and s.exec(select(WebhookAttempt)).all() == []
    assert webhooks.get_endpoint(db, ep.id) is None
    receiver.close()


def test_the_forms_model_filter_takes_names_and_names_the_unknown(db):
    from cortex_app.models import Engine, Model

    with Session(db) as s:
        s.add_all([Model(name=n, served_name=n, engine=Engine.LLAMACPP, image="i", source="a.gguf") for n in ("a", "b")])
        s.commit()
        ids = dict(s.exec(select(Model.name, Model.id)).all())
    assert webhooks.model_ids_named(db, "") is None and webhooks.model_ids_named(db, " , ") is None  # every model
    assert webhooks.model_ids_named(db, " b, a ,b") == sorted([ids["a"], ids["b"]])
    with pytest.raises(webhooks.EndpointInvalid, match="no model named 'zz', 'yy'"):
        webhooks.model_ids_named(db, "a, zz, yy")
