"""The gateway (/v1) with the official `openai` client, against a real console (`make up`'s way)
in front of the real llama.cpp test image: listing, chat, streamed chat arriving chunk by
chunk, completions, embeddings, the model's defaults, usage rows equal to what the engine
reported, every refusal (unknown, stopped, loading, keys wrong, revoked, expired, not allowed,
rate-limited, credentials of the wrong kind), a client that leaves mid-stream, and a model
killed mid-stream."""

import json
import re
import shutil
import socket
import time

import httpx
import openai
import pytest
import sqlalchemy as sa

from cortex_app import auth
from tests.conftest import LLAMA_IMAGE, VLLM_STANDIN_IMAGE

ADMIN, PASSWORD = "admin", "gateway-test-pass-1"
CHAT = [{"role": "user", "content": "hello"}]
LLAMA = {"engine": "llamacpp", "source": "tiny.gguf", "threads": 1, "extra_args": ["--poll", "0"]}


class Bed:
    def __init__(self, console, ids, keys):
        self.console, self.ids, self.keys = console, ids, keys
        self.v1 = f"{console.url}/v1"

    def client(self, key=None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key=key or self.keys["all"], max_retries=0, timeout=60)

    def key(self, **body) -> dict:
        r = self.console.call("POST", "/api/keys", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def usage(self, after_id: int = 0) -> list[dict]:
        """The usage rows written so far (the meter writes every second)."""
        db = self.console.db()
        try:
            with db.connect() as c:
                rows = c.execute(sa.text("SELECT * FROM usage_record WHERE id > :i ORDER BY id"), {"i": after_id})
                return [dict(r._mapping) for r in rows]
        finally:
            db.dispose()

    def last_usage_id(self) -> int:
        rows = self.usage()
        return rows[-1]["id"] if rows else 0

    def wait_usage(self, after_id: int, n: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.usage(after_id)
            if len(rows) >= n:
                return rows
            time.sleep(0.2)
        raise AssertionError(f"{n} usage rows not written in {timeout} s: {self.usage(after_id)}")

    def wait_listed(self, *names: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        listed: list = []
        while time.monotonic() < deadline:
            listed = sorted(m.id for m in self.client().models.list())
            if set(names) <= set(listed):
                return
            time.sleep(0.1)
        raise AssertionError(f"{names} not listed by /v1/models after {timeout} s: {listed}")


@pytest.fixture(scope="module")
def bed(start_console, tmp_path_factory, tiny_gguf, long_gguf, docker_host):
    models = tmp_path_factory.mktemp("gateway-models")
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    shutil.copy(long_gguf, models / "tiny-long.gguf")
    console = start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                            CORTEX_VLLM_IMAGE=VLLM_STANDIN_IMAGE, CORTEX_ADMIN_USER=ADMIN,
                            CORTEX_ADMIN_PASSWORD=PASSWORD)
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    specs = {
        # A long context: a long stream takes seconds, not milliseconds.
        "chat": {**LLAMA, "source": "tiny-long.gguf", "context_size": 4096, "request_defaults": {"max_tokens": 6}},
        # The tiny GGUF names no pooling type; an OpenAI-style embedding needs one.
        "emb": {**LLAMA, "embeddings": True, "extra_args": ["--poll", "0", "--pooling", "mean"]},
        "off": dict(LLAMA),
        "slow": {"engine": "vllm", "source": "org/slow", "extra_env": {"STANDIN_LOAD_DELAY": "600"}},
    }
    ids = {}
    for name, spec in specs.items():
        r = console.call("POST", "/api/models", json={"name": name, **spec})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    for name in ("chat", "emb"):
        assert console.start_ready(ids[name])["state"] == "running", console.tail()
    assert console.call("POST", f"/api/models/{ids['slow']}/start").status_code == 202
    keys = {}
    b = Bed(console, ids, keys)
    keys["all"] = b.key(name="all")["key"]
    keys["emb-only"] = b.key(name="emb-only", models=["emb"])["key"]
    b.wait_listed("chat", "emb")
    return b


def test_list_chat_completions_embeddings_and_the_usage_they_record(bed):
    client = bed.client()
    assert sorted(m.id for m in client.models.list()) == ["chat", "emb"]  # not the stopped or loading ones
    before = bed.last_usage_id()
    plain = client.chat.completions.create(model="chat", messages=CHAT)  # max_tokens from the model's defaults
    assert plain.usage.completion_tokens == 6 and plain.choices[0].message.content
    told = client.chat.completions.create(model="chat", messages=CHAT, max_tokens=3)  # the client's own wins
    assert told.usage.completion_tokens == 3
    asked = list(client.chat.completions.create(model="chat", messages=CHAT, max_tokens=5, stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].usage.completion_tokens == 5 and not asked[-1].choices  # asked for: passed on
    unasked = list(client.chat.completions.create(model="chat", messages=CHAT, max_tokens=7, stream=True))
    assert all(c.usage is None and c.choices for c in unasked)  # the gateway's own usage chunk is stripped
    assert sum(1 for c in unasked if c.choices[0].delta.content) == 7
    comp = client.completions.create(model="chat", prompt="once upon", max_tokens=4)
    assert comp.usage.completion_tokens == 4 and comp.choices[0].text
    emb = client.embeddings.create(model="emb", input="hello there")
    assert len(emb.data[0].embedding) == 64 and emb.usage.prompt_tokens > 0

    rows = bed.wait_usage(before, 6)
    want = [("chat", "chat", False, plain.usage.prompt_tokens, 6),
            ("chat", "chat", False, told.usage.prompt_tokens, 3),
            ("chat", "chat", True, asked[-1].usage.prompt_tokens, 5),
            ("chat", "chat", True, plain.usage.prompt_tokens, 7),  # same messages: same prompt tokens
            ("chat", "completions", False, comp.usage.prompt_tokens, 4),
            ("emb", "embeddings", False, emb.usage.prompt_tokens, 0)]
    assert [(r["model_name"], r["endpoint"], bool(r["stream"]), r["prompt_tokens"], r["completion_tokens"])
            for r in rows] == want
    assert all(r["key_name"] == "all" and r["status"] == 200 and r["latency_ms"] > 0 for r in rows)
    assert all((r["ttft_ms"] is not None) == bool(r["stream"]) for r in rows)
    assert all(r["ttft_ms"] <= r["latency_ms"] for r in rows if r["stream"])

    metrics = bed.console.call("GET", "/metrics").text
    assert 'cortex_gateway_requests_total{model="chat",status="200"}' in metrics
    assert 'cortex_gateway_tokens_total{kind="completion",model="chat"}' in metrics
    assert "cortex_gateway_ttft_seconds_bucket" in metrics and "cortex_gateway_request_seconds_count" in metrics


def test_a_stream_arrives_chunk_by_chunk(bed):
    """Timed per chunk as the client gets them: a buffering proxy would hand them all over at
    the end, within a millisecond or two of each other."""
    stream = bed.client().chat.completions.create(model="chat", messages=CHAT, max_tokens=1500, stream=True)
    t0 = time.perf_counter()
    times = [time.perf_counter() - t0 for c in stream if c.choices and c.choices[0].delta.content]
    span = times[-1] - times[0]
    assert len(times) == 1500
    assert span > 0.2, f"1500 tokens came within {span * 1000:.0f} ms: the test cannot tell streaming apart"
    halfway = sum(1 for t in times if t < times[0] + span / 2)
    # Generation slows as the context fills, so fewer than half come in the first half of the
    # time; a buffered answer would have (nearly) all of them there.
    assert 0.2 * len(times) < halfway < 0.9 * len(times), f"{halfway} of {len(times)} in the first half"


def test_refusals_in_openai_shape(bed):
    client, console = bed.client(), bed.console
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert e.value.body["code"] == "model_not_found"

    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="off", messages=CHAT, max_tokens=2)
    assert e.value.status_code == 503 and "an admin must start it" in e.value.message
    assert "retry-after" not in e.value.response.headers
    off = console.model(bed.ids["off"])
    assert off["state"] == "stopped" and off["container_id"] is None  # the gateway started nothing

    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="slow", messages=CHAT, max_tokens=2)
    assert e.value.status_code == 503 and e.value.body["code"] == "model_loading"
    assert int(e.value.response.headers["retry-after"]) > 0

    with pytest.raises(openai.AuthenticationError):
        bed.client("sk-cortex-abcdefghij-not-a-real-secret").models.list()
    with pytest.raises(openai.PermissionDeniedError) as e:
        bed.client(bed.keys["emb-only"]).chat.completions.create(model="chat", messages=CHAT, max_tokens=2)
    assert e.value.body["code"] == "model_not_allowed"
    assert [m.id for m in bed.client(bed.keys["emb-only"]).models.list()] == ["emb"]


def test_revoked_and_expired_keys(bed):
    made = bed.key(name="short-lived")
    client = bed.client(made["key"])
    assert client.chat.completions.create(model="chat", messages=CHAT, max_tokens=1).usage.completion_tokens == 1
    assert bed.console.call("DELETE", f"/api/keys/{made['id']}").status_code == 204
    with pytest.raises(openai.AuthenticationError) as e:  # at once: no waiting for a refresh
        client.chat.completions.create(model="chat", messages=CHAT, max_tokens=1)
    assert "revoked" in e.value.message
    listed = {k["id"]: k for k in bed.console.call("GET", "/api/keys").json()["keys"]}
    assert listed[made["id"]]["revoked_at"] and "key" not in listed[made["id"]]
    assert made["key"] not in bed.console.call("GET", "/api/keys").text

    expiring = bed.key(name="expiring", expires_in_days=7)
    db = bed.console.db()
    with db.begin() as c:  # a week later (the snapshot of keys is re-read every second)
        c.execute(sa.text("UPDATE inference_key SET expires_at = :t WHERE id = :i"),
                  {"t": "2000-01-01 00:00:00", "i": expiring["id"]})
    db.dispose()
    deadline = time.monotonic() + 5
    while True:
        try:
            bed.client(expiring["key"]).models.list()
        except openai.AuthenticationError as exc:
            assert "expired" in exc.message
            break
        assert time.monotonic() < deadline, "an expired key still works"
        time.sleep(0.2)


def test_credentials_never_cross_between_api_and_v1(bed):
    console = bed.console
    session = console.token  # an admin's session token: the whole /api, but not /v1
    db = console.db()
    api_token = auth.create_api_token(db, "ops", "admin")
    db.dispose()
    for wrong in (session, api_token):
        r = httpx.get(f"{bed.v1}/models", headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert "admin API token is not accepted" in httpx.get(
        f"{bed.v1}/models", headers={"Authorization": f"Bearer {api_token}"}).json()["error"]["message"]
    for path in ("/api/models", "/api/keys", "/metrics"):
        r = httpx.get(f"{console.url}{path}", headers={"Authorization": f"Bearer {bed.keys['all']}"})
        assert r.status_code == 401, (path, r.status_code)
    assert httpx.get(f"{bed.v1}/models").status_code == 401  # nothing at all
    # No page of another origin may read an answer: no CORS headers, and no preflight allowed.
    key = {"Authorization": f"Bearer {bed.keys['all']}"}
    asked = httpx.get(f"{bed.v1}/models", headers={**key, "Origin": "http://evil.example"})
    assert asked.status_code == 200 and not any(h.startswith("access-control-") for h in asked.headers)
    preflight = httpx.options(f"{bed.v1}/chat/completions", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert "access-control-allow-origin" not in preflight.headers and preflight.status_code >= 400


def test_rate_limit(bed):
    before = bed.last_usage_id()
    key = bed.key(name="limited", rpm_limit=3)["key"]
    client = bed.client(key)
    for _ in range(3):
        client.chat.completions.create(model="chat", messages=CHAT, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="chat", messages=CHAT, max_tokens=1)
    assert 0 < int(e.value.response.headers["retry-after"]) <= 60
    # Over its limit, a key is refused before its body is read: one announced as 15 MiB that
    # never comes is answered at once (read first, it would wait for the body).
    port = httpx.URL(bed.v1).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}"
                  f"\r\nContent-Type: application/json\r\nContent-Length: {15 << 20}\r\n\r\n".encode())
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
    with pytest.raises(openai.PermissionDeniedError):  # a model the key may not use: 403
        bed.client(bed.keys["emb-only"]).chat.completions.create(model="chat", messages=CHAT, max_tokens=1)
    # Refusals are counted, never written as usage: only the three answers are.
    rows = bed.wait_usage(before, 3)
    time.sleep(1.5)  # the meter writes every second: anything more would be there now
    rows = bed.usage(before)
    assert [(r["key_name"], r["status"]) for r in rows] == [("limited", 200)] * 3, rows
    metrics = bed.console.call("GET", "/metrics").text
    assert re.search(r'cortex_gateway_refused_total\{status="429"\} [2-9]', metrics), metrics[-2000:]
    assert re.search(r'cortex_gateway_refused_total\{status="403"\} [1-9]', metrics)


def _busy_slots(base: str) -> int:
    return sum(1 for s in httpx.get(f"{base}/slots", timeout=5).json() if s.get("is_processing"))


def test_a_client_that_leaves_mid_stream_stops_the_generation(bed):
    direct = f"http://127.0.0.1:{bed.console.model(bed.ids['chat'])['host_port']}"
    with httpx.stream("POST", f"{bed.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {bed.keys['all']}"},
                      json={"model": "chat", "messages": CHAT, "max_tokens": 3500, "stream": True}) as r:
        lines = r.iter_lines()
        for _ in range(20):
            next(lines)
        assert _busy_slots(direct) == 1
    left = time.monotonic()
    while _busy_slots(direct):
        assert time.monotonic() - left < 2.0, "the engine went on generating for a client that left"
        time.sleep(0.05)


def test_a_client_that_leaves_a_plain_request_is_let_go_at_once(bed):
    """Not streamed: the client waits for the whole answer and gives up before it comes (a
    timeout, a closed tab). The gateway drops its engine connection and records 499 at once,
    not when the answer would have been done. (llama-server itself finishes a non-streamed
    answer whoever left: measured on the engine directly, it went on 5 s; a stream it stops.)"""
    direct = f"http://127.0.0.1:{bed.console.model(bed.ids['chat'])['host_port']}"
    key = bed.key(name="leaver")["key"]  # its records are this test's alone (others may still be written)
    body = json.dumps({"model": "chat", "messages": CHAT, "max_tokens": 3500}).encode()
    host, port = bed.console.url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: cortex\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                  + body)
        deadline = time.monotonic() + 10
        while not _busy_slots(direct):
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.05)
    deadline = time.monotonic() + 4  # the meter writes every second
    while not (mine := [r for r in bed.usage() if r["key_name"] == "leaver"]):
        assert time.monotonic() < deadline, "no record of the request"
        time.sleep(0.1)
    (row,) = mine
    assert (row["model_name"], row["stream"], row["status"]) == ("chat", False, 499) and row["latency_ms"] < 2000
    deadline = time.monotonic() + 60
    while _busy_slots(direct):  # the engine's own work ends on its own; the next test needs the slot
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_client_that_closes_at_done_got_the_whole_stream(bed):
    """The openai client stops reading a stream at `data: [DONE]` and closes the connection
    before the closing chunk: the answer was whole, and is recorded 200, never 499."""
    key = bed.key(name="closer")["key"]
    body = json.dumps({"model": "chat", "messages": CHAT, "max_tokens": 3, "stream": True}).encode()
    host, port = bed.console.url.rsplit("//", 1)[1].split(":")
    for _ in range(20):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: cortex\r\nContent-Type: application/json\r\n"
                      + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            got = b""
            while b"data: [DONE]" not in got:
                data = s.recv(65536)
                assert data, got
                got += data
    deadline = time.monotonic() + 5  # the meter writes every second
    while len(mine := [r for r in bed.usage() if r["key_name"] == "closer"]) < 20:
        assert time.monotonic() < deadline, mine
        time.sleep(0.1)
    assert [r["status"] for r in mine] == [200] * 20
    assert all(r["completion_tokens"] == 3 for r in mine)


def test_a_model_killed_mid_stream_ends_the_stream_with_an_error(bed, docker_client):
    r = bed.console.call("POST", "/api/models", json={"name": "victim", **LLAMA, "source": "tiny-long.gguf",
                                                             "context_size": 4096})
    victim = r.json()["id"]
    assert bed.console.start_ready(victim)["state"] == "running"
    bed.wait_listed("victim")
    stream = bed.client().chat.completions.create(model="victim", messages=CHAT, max_tokens=3500, stream=True)
    seen = 0
    t0 = time.monotonic()
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            seen += 1
            if seen == 10:
                docker_client.containers.get(bed.console.model(victim)["container_id"]).kill()
    assert seen >= 10 and time.monotonic() - t0 < 15
    assert "broke off" in str(e.value)
    bed.console.wait_model(victim, "failed", timeout=30)
    with pytest.raises(openai.APIStatusError) as refused:  # and from then on it is refused, not tried
        bed.client().chat.completions.create(model="victim", messages=CHAT, max_tokens=1)
    assert refused.value.status_code in (502, 503)

