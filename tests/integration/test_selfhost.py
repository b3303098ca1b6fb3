"""The console as one container beside the Docker socket, from the project's own Dockerfile.

Built once per run on the test engine (BASE = the locally made bookworm + python3 image),
then run as README "Self-hosting" shows: socket, data volume, models folder. Each test
starts its own console container, network and volume, and removes them (and every model
container on that network) afterwards, pass or fail.
"""

from __future__ import annotations

import shutil
import textwrap
import time
import uuid

import httpx
import pytest

from tests import selfhost
from tests.conftest import LLAMA_IMAGE, RUN_ID, TEST_LABEL, free_port, missing

ADMIN, PASSWORD = "admin", "selfhost-pass-1"


@pytest.fixture(scope="module")
def console_image(docker_client, tmp_path_factory):
    import docker

    try:
        docker_client.images.get(selfhost.BASE)
    except docker.errors.ImageNotFound:
        missing(f"image {selfhost.BASE} is not built (scripts/build-test-images.sh)")
    context = selfhost.build_context(tmp_path_factory.mktemp("context"))
    seconds, _ = selfhost.build_image(docker_client, context)
    print(f"console image built in {seconds:.1f} s")
    return selfhost.IMAGE


@pytest.fixture
def models_dir(tmp_path, tiny_gguf):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(tiny_gguf, d / "tiny.gguf")
    return d


@pytest.fixture
def console_factory(docker_client, docker_host, console_image, models_dir):
    """start(**env) -> a running console container; everything it made is removed after."""
    tag = uuid.uuid4().hex[:8]
    network, volume = f"cortex-test-net-{tag}", f"cortex-test-data-{tag}"
    names: list[str] = []
    # Docker's network name filter matches parts of names: a network named like ours plus a
    # suffix (as compose makes them) must not pass for ours.
    decoy = docker_client.networks.create(f"{network}_default", labels={TEST_LABEL: RUN_ID})

    def start(image: str = console_image, when_serving=None, **env) -> selfhost.Console:
        """`when_serving(console)` runs the moment /api/health first answers, before anything else."""
        name = f"cortex-test-console-{tag}-{len(names)}"
        names.append(name)
        console = selfhost.run_console(
            docker_client, docker_host, name=name, port=free_port(), volume=volume, network=network,
            models_dir=models_dir, image=image, labels={TEST_LABEL: RUN_ID},
            env={"CORTEX_ADMIN_USER": ADMIN, "CORTEX_ADMIN_PASSWORD": PASSWORD, "CORTEX_PROBE_INTERVAL": "1",
                 "CORTEX_LLAMACPP_IMAGE": LLAMA_IMAGE, **env})
        console.wait_healthy(timeout=60)
        if when_serving is not None:
            when_serving(console)
        assert console.sign_in(ADMIN, PASSWORD).status_code == 200, console.logs()
        return console

    yield start
    selfhost.remove_everything(docker_client, consoles=names, volume=volume, network=network)
    decoy.remove()


def tiny_model(name: str = "tiny") -> dict:
    # One thread, no busy polling: the tiny model shares 2 cores with everything else here.
    return {"name": name, "engine": "llamacpp", "image": LLAMA_IMAGE, "source": "tiny.gguf", "threads": 1,
            "extra_args": ["--poll", "0"]}


def model_containers(client, network: str) -> list:
    return [c for c in client.containers.list(all=True, filters={"network": network})
            if c.labels.get("cortex.managed") == "true"]


def test_image_runs_a_model_over_the_shared_network_and_a_restart_stops_it(console_factory, docker_client,
                                                                            models_dir):
    # No host ports at all: `running` can only have been seen through the shared network.
    console = console_factory(CORTEX_PUBLISH_HOST="none", CORTEX_MODELS_HOST_DIR=str(models_dir))
    assert console.sign_in(ADMIN, "wrong-password").status_code == 401
    assert httpx.get(f"{console.url}/api/models", timeout=5).status_code == 401
    # The frontend compiled at build time is served (nothing was built at start).
    page = httpx.get(f"{console.url}/login/", timeout=5)
    assert page.status_code == 200 and "<script" in page.text and "/assets/" in page.text
    assert "Compiling" not in console.logs()
    assert console.call("GET", "/api/models").status_code == 200

    created = console.call("POST", "/api/models", json=tiny_model())
    assert created.status_code == 201, created.text
    mid = created.json()["id"]
    bad = console.call("POST", "/api/models", json={**tiny_model("other"), "source": "../etc/passwd"})
    assert bad.status_code == 422 and "source" in bad.json()["errors"]

    started = console.call("POST", f"/api/models/{mid}/start")
    assert started.status_code == 202 and started.json()["state"] == "loading", started.text
    running = console.wait_model(mid, "running")
    assert running["host_port"] is None

    [model] = model_containers(docker_client, console.network)
    networks = model.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [console.network] and model.attrs["HostConfig"]["PortBindings"] in ({}, None)
    assert console.network in console.container.attrs["NetworkSettings"]["Networks"], "console joined it"
    assert model.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    [mount] = model.attrs["Mounts"]
    assert mount["Source"] == str(models_dir) and mount["Destination"] == "/models" and not mount["RW"]

    # The seed's "Test 2": restart the console container.
    console.container.restart(timeout=10)
    console.wait_healthy()
    assert model_containers(docker_client, console.network) == []
    row = console.wait_model(mid, "stopped", timeout=10)  # stopped by the shutdown policy
    # The volume kept the configuration (and the admin: the same password signs in).
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    assert {k: row[k] for k in ("name", "image", "source")} == {k: tiny_model()[k] for k in ("name", "image",
                                                                                            "source")}

    # A crash (SIGKILL) with a model running: the next start removes it at once, without
    # waiting out the dead console's leader lease.
    console.call("POST", f"/api/models/{mid}/start")
    console.wait_model(mid, "running")
    console.container.kill()
    assert len(model_containers(docker_client, console.network)) == 1, "the orphan outlives the console"
    t0 = time.monotonic()
    console.container.start()
    console.wait_healthy()
    row = console.wait_model(mid, "stopped", timeout=15)
    assert time.monotonic() - t0 < 15 and model_containers(docker_client, console.network) == []

    # SIGTERM (docker stop) ends the console cleanly within Docker's 10 s.
    t0 = time.monotonic()
    console.container.stop(timeout=10)
    took = time.monotonic() - t0
    state = console.container.attrs["State"]
    assert state["ExitCode"] == 0 and took < 10, (state, took)


def test_upgrade_by_remove_and_run_leaves_no_model_running(console_factory, docker_client):
    """The README's upgrade as a new user replayed it: `docker rm -f cortex`, then the same
    `docker run` on the same volume. The removed console's lease blocked the boot pass, and the
    new console later took over as a follower and kept the old run's model running. Now the
    engine proves the old container gone: the boot pass runs before the new console serves."""
    old = console_factory()
    mid = old.call("POST", "/api/models", json=tiny_model()).json()["id"]
    old.call("POST", f"/api/models/{mid}/start")
    old.wait_model(mid, "running")
    [model] = model_containers(docker_client, old.network)
    old.container.remove(force=True)  # docker rm -f cortex
    assert model_containers(docker_client, old.network) == [model], "the old run's model outlives its console"

    seen: dict = {}
    t0 = time.monotonic()
    new = console_factory(when_serving=lambda c: seen.update(left=model_containers(docker_client, c.network),
                                                             at=time.monotonic() - t0))
    assert seen["left"] == [], "the old run's model was still there when the new console answered"
    row = new.call("GET", f"/api/models/{mid}").json()
    assert row["state"] == "stopped" and row["container_id"] is None, row
    assert "console restarted" in row["state_reason"]
    print(f"new console serving {seen['at']:.1f} s after docker run, nothing of the old run left")
    assert seen["at"] < 20, "it waited out the removed console's 30 s lease"


def test_keep_models_on_restart_adopts_the_running_model(console_factory, docker_client):
    console = console_factory(CORTEX_KEEP_MODELS_ON_RESTART="true")
    mid = console.call("POST", "/api/models", json=tiny_model()).json()["id"]
    console.call("POST", f"/api/models/{mid}/start")
    before = console.wait_model(mid, "running")
    # Host ports for admins stay: published on the host's loopback, at a port the engine chose.
    assert before["host_port"], before
    assert httpx.get(f"http://127.0.0.1:{before['host_port']}/health", timeout=5).status_code == 200

    console.container.restart(timeout=10)
    console.wait_healthy()
    after = console.wait_model(mid, "running")
    assert after["container_id"] == before["container_id"]
    [model] = model_containers(docker_client, console.network)
    assert model.id == before["container_id"] and model.status == "running"
    # ... and it is still probed, through the network, by the restarted console, also once
    # the model is renamed while it runs (its container keeps the name it started with).
    rename = console.container.exec_run(["python3", "-c", "import sqlite3; c = sqlite3.connect('/data/cortex.db'); "
                                         "c.execute(\"update model set name = 'renamed'\"); c.commit()"])
    assert rename.exit_code == 0, rename.output
    time.sleep(3.5)  # three probe rounds: 'unhealthy' would take CORTEX_UNHEALTHY_AFTER=3 failures
    row = console.call("GET", f"/api/models/{mid}").json()
    assert (row["name"], row["health"], row["state"]) == ("renamed", "healthy", "running"), row


def test_models_host_dir_that_does_not_match_the_mount_stops_the_start(docker_client, docker_host,
                                                                         console_image, models_dir):
    tag = uuid.uuid4().hex[:8]
    name, network, volume = f"cortex-test-console-{tag}", f"cortex-test-net-{tag}", f"cortex-test-data-{tag}"
    try:
        console = selfhost.run_console(docker_client, docker_host, name=name, port=free_port(), volume=volume,
                                       network=network, models_dir=models_dir, labels={TEST_LABEL: RUN_ID},
                                       env={"CORTEX_MODELS_HOST_DIR": "/srv/elsewhere"})
        status = console.container.wait(timeout=60)
        logs = console.logs()
        assert status["StatusCode"] == 2, logs
        assert (f"CORTEX_MODELS_HOST_DIR=/srv/elsewhere, but CORTEX_MODELS_DIR=/models is mounted from "
                f"{models_dir}") in logs
        assert "Traceback" not in logs
        assert docker_client.networks.list(names=[network]) == [], "nothing is set up for a refused start"
    finally:
        selfhost.remove_everything(docker_client, consoles=[name], volume=volume, network=network)


UPGRADE_MIGRATION = '''
"""Test-only migration: what the next release's schema change does to an existing database."""
import sqlalchemy as sa
from alembic import op

revision = "9001_test_upgrade"
down_revision = "{head}"


def upgrade():
    op.add_column("model", sa.Column("upgrade_note", sa.String(32), nullable=False, server_default="kept"))


def downgrade():
    op.drop_column("model", "upgrade_note")
'''


def test_a_new_image_upgrades_the_database_in_the_volume(console_factory, docker_client, tmp_path):
    """The image as released (migration head H) writes the database; the next image (H plus a
    migration, built on top of it) starts on the same volume, migrates at start, loses nothing."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(selfhost.ROOT / "alembic.ini"))).get_current_head()
    context = tmp_path / "next"
    context.mkdir()
    (context / "9001_test_upgrade.py").write_text(textwrap.dedent(UPGRADE_MIGRATION.format(head=head)))
    (context / "Dockerfile").write_text(f"FROM {selfhost.IMAGE}\nCOPY 9001_test_upgrade.py /app/alembic/versions/\n")
    next_image = f"cortex-test/console:next-{uuid.uuid4().hex[:6]}"
    selfhost.build_image(docker_client, context, tag=next_image)
    try:
        old = console_factory()
        mid = old.call("POST", "/api/models", json=tiny_model()).json()["id"]
        old.container.stop(timeout=10)

        new = console_factory(image=next_image)  # same volume: the factory's
        logs = new.logs()
        assert f"migrated {head} -> 9001_test_upgrade" in logs, logs
        row = new.call("GET", f"/api/models/{mid}").json()
        assert row["name"] == "tiny" and row["source"] == "tiny.gguf"
        note = new.container.exec_run(["python3", "-c", "import sqlite3; print(sqlite3.connect("
                                       "'/data/cortex.db').execute('select upgrade_note from model').fetchall())"])
        assert note.output.decode().strip() == "[('kept',)]", note.output
    finally:
        for c in docker_client.containers.list(all=True, filters={"ancestor": next_image}):
            c.remove(force=True)
        docker_client.images.remove(next_image, force=True)
