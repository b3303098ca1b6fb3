"""Replicas behind one name: models that share an alias, through the gateway with the official
`openai` client, against a real console (`make up`'s way) and real llama.cpp containers. The
alias is listed, keys may be limited to it, requests go round the running replicas and to the
one with the fewest in flight, and with none running the gateway refuses (it starts none)."""

import shutil
import threading
import time

import openai
import pytest
import sqlalchemy as sa

from tests.conftest import LLAMA_IMAGE

ADMIN, PASSWORD = "admin", "replicas-test-pass-1"
CHAT = [{"role": "user", "content": "hello"}]
LLAMA = {"engine": "llamacpp", "source": "tiny-long.gguf", "threads": 1, "context_size": 4096,
         "extra_args": ["--poll", "0"]}


@pytest.fixture(scope="module")
def bed(start_console, tmp_path_factory, long_gguf, docker_host):
    models = tmp_path_factory.mktemp("replica-models")
    shutil.copy(long_gguf, models / "tiny-long.gguf")
    console = start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                            CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    ids = {}
    for name, alias in (("rep-a", "team"), ("rep-b", "team"), ("rep-c", None)):
        r = console.call("POST", "/api/models", json={"name": name, **LLAMA, **({"alias": alias} if alias else {})})
        assert r.status_code == 201, r.text
        assert r.json()["alias"] == alias
        ids[name] = r.json()["id"]
    # An alias is set by an edit as well; a stopped replica gets no traffic.
    r = console.call("PUT", f"/api/models/{ids['rep-c']}", json={"name": "rep-c", **LLAMA, "alias": "team"})
    assert r.status_code == 200 and r.json()["alias"] == "team", r.text
    for name in ("rep-a", "rep-b"):
        assert console.start_ready(ids[name])["state"] == "running", console.tail()
    key = console.call("POST", "/api/keys", json={"name": "team-only", "models": ["team"]})
    assert key.status_code == 201, key.text
    return {"console": console, "ids": ids, "key": key.json()["key"]}


def client(bed) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{bed['console'].url}/v1", api_key=bed["key"], max_retries=0, timeout=60)


def usage_models(bed, after_id: int, n: int, timeout: float = 10) -> tuple[list[str], int]:
    """The model of each usage row written after `after_id` (the meter writes every second)."""
    db = bed["console"].db()
    try:
        deadline = time.monotonic() + timeout
        while True:
            with db.connect() as c:
                rows = c.execute(sa.text("SELECT id, model_name FROM usage_record WHERE id > :i ORDER BY id"),
                                 {"i": after_id}).all()
            if len(rows) >= n or time.monotonic() > deadline:
                return [m for _, m in rows], (rows[-1][0] if rows else after_id)
            time.sleep(0.2)
    finally:
        db.dispose()


def last_usage_id(bed) -> int:
    """The newest usage row once the records of earlier requests are written (every second)."""
    time.sleep(1.5)
    return usage_models(bed, 0, 0, timeout=0)[1]


def wait_listed(c: openai.OpenAI, want: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sorted(m.id for m in c.models.list()) != want:
        assert time.monotonic() < deadline, sorted(m.id for m in c.models.list())
        time.sleep(0.1)


def test_the_alias_is_listed_and_a_key_limited_to_it_uses_it_only(bed):
    c = client(bed)
    wait_listed(c, ["team"])  # the key sees only what it may use: not rep-a / rep-b by their own names
    assert c.chat.completions.create(model="team", messages=CHAT, max_tokens=2).usage.completion_tokens == 2
    with pytest.raises(openai.PermissionDeniedError):
        c.chat.completions.create(model="rep-a", messages=CHAT, max_tokens=2)


def test_requests_go_round_the_running_replicas(bed):
    c = client(bed)
    last = last_usage_id(bed)
    for _ in range(6):
        answer = c.chat.completions.create(model="team", messages=CHAT, max_tokens=2)
        assert answer.usage.completion_tokens == 2
    served, _ = usage_models(bed, last, 6)
    assert sorted(served) == ["rep-a"] * 3 + ["rep-b"] * 3, served  # never rep-c: it is stopped
    assert all(a != b for a, b in zip(served, served[1:])), served  # in turn


def test_a_busy_replica_gets_no_new_request_while_another_is_free(bed):
    """A long stream holds one replica: plain requests meanwhile all go to the other one."""
    c = client(bed)
    last = last_usage_id(bed)
    started, done = threading.Event(), threading.Event()

    def long_stream():
        for chunk in c.chat.completions.create(model="team", messages=CHAT, max_tokens=1500, stream=True):
            started.set()
        done.set()

    t = threading.Thread(target=long_stream)
    t.start()
    try:
        assert started.wait(20)
        for _ in range(4):
            c.chat.completions.create(model="team", messages=CHAT, max_tokens=2)
        assert not done.is_set(), "the stream ended before the plain requests: the test proves nothing"
    finally:
        t.join(120)
    served, _ = usage_models(bed, last, 5)
    streamed_on = served[-1]  # its record is written when it ends, after the four plain ones
    assert served[:4] == [{"rep-a": "rep-b", "rep-b": "rep-a"}[streamed_on]] * 4, served


def test_with_no_replica_running_the_alias_is_refused_and_nothing_starts(bed):
    console, ids = bed["console"], bed["ids"]
    for name in ("rep-a", "rep-b"):
        assert console.call("POST", f"/api/models/{ids[name]}/stop").status_code in (200, 202)
    c = client(bed)
    deadline = time.monotonic() + 30
    while True:
        try:
            c.chat.completions.create(model="team", messages=CHAT, max_tokens=2)
        except openai.APIStatusError as e:
            if e.status_code == 503 and e.body["code"] == "model_not_running":
                assert "an admin must start one" in e.message and "never starts" in e.message
                break
        assert time.monotonic() < deadline, "the alias was still served 30 s after its replicas were stopped"
        time.sleep(0.2)
    time.sleep(2)  # the reconciler's passes meanwhile start nothing either
    for name in ("rep-a", "rep-b", "rep-c"):
        row = console.model(ids[name])
        assert row["state"] == "stopped" and row["container_id"] is None, row
    assert [m.id for m in c.models.list()] == []
