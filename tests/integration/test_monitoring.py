"""Monitoring against the real console process: /api/ready follows the Docker Engine going
away and coming back (a real stop of the private test engine), engine.* webhooks arrive,
and /metrics parses with prometheus-client's parser and matches the table."""


import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from cortex_app import auth, crud, webhooks
from cortex_app.db import make_engine
from tests.conftest import LLAMA_IMAGE
from tests.integration.conftest import wait_for
from tests.unit.test_webhooks import Receiver


def _console(start_console, tmp_path, tiny_gguf, host):
    import shutil

    (tmp_path / "models").mkdir()
    shutil.copy(tiny_gguf, tmp_path / "models" / "tiny.gguf")
    return start_console(DOCKER_HOST=host, CORTEX_MODELS_DIR=str(tmp_path / "models"),
                         CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE, CORTEX_RECONCILE_INTERVAL="1")


@pytest.fixture
def console(start_console, tmp_path, tiny_gguf, docker_host):
    return _console(start_console, tmp_path, tiny_gguf, docker_host)


def test_ready_follows_the_engine_and_engine_events_are_sent(start_console, tmp_path, tiny_gguf,
                                                             restartable_engine):
    """The engine really stops (one this test may stop: never someone's own, never skipped)."""
    console = _console(start_console, tmp_path, tiny_gguf, restartable_engine.host)
    db = console.db()
    receiver = Receiver()
    ep = webhooks.create_endpoint(db, url=receiver.url, event_types=["engine.unreachable", "engine.reachable"])
    assert httpx.get(console.url + "/api/ready").json()["status"] == "ready"
    restartable_engine.stop()
    try:
        r = httpx.get(console.url + "/api/ready", timeout=10)
        assert r.status_code == 503 and r.json() == {"status": "unready", "failed": ["docker"]}  # no details
        token = auth.create_api_token(db, "monitor")
        detailed = httpx.get(console.url + "/api/ready", timeout=10, headers={"Authorization": f"Bearer {token}"})
        assert detailed.status_code == 503 and "no Docker Engine answers" in detailed.json()["checks"]["docker"]
        assert httpx.get(console.url + "/api/health").status_code == 200  # liveness is not readiness
        wait_for(lambda: len(receiver.got) >= 1, timeout=10)
    finally:
        restartable_engine.start()
    wait_for(lambda: httpx.get(console.url + "/api/ready", timeout=10).status_code == 200, timeout=15)
    wait_for(lambda: len(receiver.got) >= 2, timeout=10)
    types = [Webhook(ep.secret).verify(body, h)["type"] for h, body in receiver.got]
    assert types == ["engine.unreachable", "engine.reachable"]
    receiver.close()
    db.dispose()
    console.stop()  # two consoles on one engine would each remove the other's containers


def test_metrics_need_a_token_parse_and_match_the_table(console):
    db = make_engine(console.db_url)
    assert httpx.get(console.url + "/metrics").status_code == 401
    token = auth.create_api_token(db, "prometheus", "admin")
    console.token = token  # a script's token: it creates and starts models over the API
    running = console.call("POST", "/api/models", json={"name": "up", "engine": "llamacpp", "source": "tiny.gguf",
                                                         "extra_args": ["-t", "1", "--poll", "0"]}).json()
    console.call("POST", "/api/models", json={"name": "idle", "engine": "llamacpp", "source": "tiny.gguf"})
    started = console.start_ready(running["id"])
    assert started["state"] == "running", started["state_reason"]
    wait_for(lambda: crud.get_model(db, running["id"]).probe_latency_ms is not None, timeout=15)
    r = httpx.get(console.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    by_state = {s.labels["state"]: s.value for s in families["cortex_models"].samples}
    rows = crud.list_models(db)
    for state in ("running", "stopped", "failed", "loading"):
        assert by_state[state] == sum(m.state.value == state for m in rows)
    assert by_state["running"] == 1 and by_state["stopped"] == 1
    [lat] = families["cortex_model_probe_latency_seconds"].samples
    assert lat.labels["model"] == "up" and lat.value > 0
    assert families["cortex_reconcile_passes"].samples[0].value >= 1
    models = httpx.get(console.url + "/api/models", headers={"Authorization": f"Bearer {token}"}).json()["models"]
    assert {m["name"]: m["state"] for m in models} == {"up": "running", "idle": "stopped"}
    assert httpx.get(console.url + "/api/models", headers={"Authorization": "Bearer ctx_wrong"}).status_code == 401
    assert console.call("POST", f"/api/models/{running['id']}/stop").status_code == 200
    db.dispose()
