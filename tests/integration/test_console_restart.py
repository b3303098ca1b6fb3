"""The seed's scenario with the real console process (production build) and the real
llama-server: after any console restart no model runs that an admin did not just start,
and the table says so; with CORTEX_KEEP_MODELS_ON_RESTART=true models are adopted."""

import pytest

from cortex_app import crud
from cortex_app.db import installation_id, make_engine
from cortex_app.engines.spec import LABEL_MANAGED
from cortex_app.lifecycle import Lifecycle
from cortex_app.models import ModelState
from cortex_app.runtime.docker import DockerRuntime
from cortex_app.settings import load_settings
from tests.conftest import LLAMA_IMAGE

S = ModelState


@pytest.fixture
def env(tmp_path, tiny_gguf, docker_host):
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    return {"DOCKER_HOST": docker_host, "CORTEX_MODELS_DIR": str(models), "CORTEX_LLAMACPP_IMAGE": LLAMA_IMAGE,
            "CORTEX_RECONCILE_INTERVAL": "2"}


def admin(console, test_labels):
    """What an admin's clicks do, from this test process, on the console's own database."""
    settings = load_settings(console.env)
    db = make_engine(console.db_url)
    runtime = DockerRuntime(settings.docker_host, extra_labels=test_labels, instance=installation_id(db))
    return Lifecycle(db, runtime, settings), settings


def managed(docker_client):
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})


def start_two(lc, settings):
    ids = []
    for name in ("alpha", "beta"):
        existing = [m for m in crud.list_models(lc.db) if m.name == name]
        m = existing[0] if existing else crud.create_model(lc.db, settings, {
            "name": name, "engine": "llamacpp", "source": "tiny.gguf", "extra_args": ["-t", "1", "--poll", "0"]})
        assert lc.start_and_wait(m.id, actor="admin:test").state is S.RUNNING
        ids.append(m.id)
    return ids


def test_three_restarts_leave_nothing_running(start_console, env, docker_client, test_labels):
    console = start_console(**env)
    for how in ("stop", "kill", "stop"):
        lc, settings = admin(console, test_labels)
        ids = start_two(lc, settings)
        assert len(managed(docker_client)) == 2
        getattr(console, how)()  # graceful shutdown, or a crash
        if how == "stop":  # the shutdown policy already removed them
            assert managed(docker_client) == []
        console = start_console(data_dir=console.data_dir, **env)
        # The boot pass ran before the console answered: rows == containers == nothing.
        assert managed(docker_client) == []
        rows = {m.id: m for m in crud.list_models(lc.db)}
        assert [rows[i].state for i in ids] == [S.STOPPED, S.STOPPED], [rows[i].state_reason for i in ids]
        assert all(rows[i].container_id is None for i in ids)
        lc.db.dispose()
    console.stop()


def test_keep_models_adopts_without_restarting(start_console, env, docker_client, test_labels):
    env = {**env, "CORTEX_KEEP_MODELS_ON_RESTART": "true"}
    console = start_console(**env)
    lc, settings = admin(console, test_labels)
    ids = start_two(lc, settings)
    before = {m.id: m.container_id for m in crud.list_models(lc.db)}
    console.stop()
    assert len(managed(docker_client)) == 2, "keep-models: shutdown leaves them running"
    console = start_console(data_dir=console.data_dir, **env)
    rows = {m.id: m for m in crud.list_models(lc.db)}
    assert [rows[i].state for i in ids] == [S.RUNNING, S.RUNNING]
    assert {i: rows[i].container_id for i in ids} == before, "adopted: same containers, no restart"
    assert {c.id for c in managed(docker_client)} == set(before.values())
    for i in ids:
        lc.stop(i, actor="admin:test")
    console.stop()
    lc.db.dispose()
