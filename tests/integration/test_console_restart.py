"""The seed's scenario with the real console process (production build) and the real
llama-server, driven over the HTTP API as a script would: after any console restart no model
runs that an admin did not just start, and the table says so; with
CORTEX_KEEP_MODELS_ON_RESTART=true models are adopted."""

import pytest

from tests.conftest import LLAMA_IMAGE

ADMIN, PASSWORD = "admin", "restart-pass-1"


@pytest.fixture
def env(tmp_path, tiny_gguf, docker_host):
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    return {"DOCKER_HOST": docker_host, "CORTEX_MODELS_DIR": str(models), "CORTEX_LLAMACPP_IMAGE": LLAMA_IMAGE,
            "CORTEX_RECONCILE_INTERVAL": "2", "CORTEX_ADMIN_USER": ADMIN, "CORTEX_ADMIN_PASSWORD": PASSWORD}


def start_two(console) -> list[int]:
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    ids = []
    existing = {m["name"]: m["id"] for m in console.call("GET", "/api/models").json()["models"]}
    for name in ("alpha", "beta"):
        mid = existing.get(name) or console.call("POST", "/api/models", json={
            "name": name, "engine": "llamacpp", "source": "tiny.gguf", "threads": 1,
            "extra_args": ["--poll", "0"]}).json()["id"]
        assert console.start_ready(mid)["state"] == "running"
        ids.append(mid)
    return ids


def test_three_restarts_leave_nothing_running(start_console, env, docker_client):
    console = start_console(**env)
    for how in ("stop", "kill", "stop"):
        ids = start_two(console)
        assert len(console.containers(docker_client)) == 2
        getattr(console, how)()  # graceful shutdown, or a crash
        if how == "stop":  # the shutdown policy already removed them
            assert console.containers(docker_client) == []
        console = start_console(data_dir=console.data_dir, **env)
        # The boot pass ran before the console answered: rows == containers == nothing.
        assert console.containers(docker_client) == []
        assert console.sign_in(ADMIN, PASSWORD).status_code == 200
        rows = [console.model(i) for i in ids]
        assert [r["state"] for r in rows] == ["stopped", "stopped"], [r["state_reason"] for r in rows]
        assert all(r["container_id"] is None for r in rows)
    console.stop()


def test_keep_models_adopts_without_restarting(start_console, env, docker_client):
    env = {**env, "CORTEX_KEEP_MODELS_ON_RESTART": "true"}
    console = start_console(**env)
    ids = start_two(console)
    before = {i: console.model(i)["container_id"] for i in ids}
    console.stop()
    assert len(console.containers(docker_client)) == 2, "keep-models: shutdown leaves them running"
    console = start_console(data_dir=console.data_dir, **env)
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    rows = {i: console.model(i) for i in ids}
    assert [rows[i]["state"] for i in ids] == ["running", "running"]
    assert {i: rows[i]["container_id"] for i in ids} == before, "adopted: same containers, no restart"
    assert {c.id for c in console.containers(docker_client)} == set(before.values())
    for i in ids:
        assert console.call("POST", f"/api/models/{i}/stop").status_code == 200
    console.stop()
