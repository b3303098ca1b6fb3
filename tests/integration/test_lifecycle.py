"""Lifecycle against the real engine: cortex-test/llama-server (the real llama-server) and
cortex-test/vllm-standin (a stand-in for vLLM). Each test checks the row and the containers."""

import threading

import httpx
import pytest
from sqlmodel import Session, select

from cortex_app import crud
from cortex_app.engines.spec import LABEL_MODEL_ID
from cortex_app.lifecycle import Lifecycle, Refused
from cortex_app.models import ModelEvent, ModelState
from cortex_app.reconcile.loop import Reconciler
from cortex_app.runtime.docker import DockerRuntime
from tests.conftest import BUSYBOX_IMAGE, LLAMA_IMAGE, VLLM_STANDIN_IMAGE
from tests.integration.conftest import settle, start_ready

S = ModelState
FAST_LLAMA = ["-t", "1", "--poll", "0"]  # one thread, no busy-polling: kind to 2 cores


@pytest.fixture
def lc(migrated_db, bed_settings, docker_host, test_labels):
    # extra_labels: the per-test label, so the fixture removes whatever a failed test leaves.
    runtime = DockerRuntime(docker_host, extra_labels=test_labels)
    yield Lifecycle(migrated_db, runtime, bed_settings)
    runtime.close()


@pytest.fixture
def rec(lc):
    """The reconciler: the one judge of readiness (loading -> running) and of failures."""
    return Reconciler(lc)


def make(lc, **data):
    return crud.create_model(lc.db, lc.settings, data)


def llama(lc, name="tiny", **kw):
    return make(lc, **{"name": name, "engine": "llamacpp", "image": LLAMA_IMAGE, "source": "tiny.gguf",
                       "extra_args": FAST_LLAMA, "context_size": 256, **kw})


def containers_of(docker_client, model_id):
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_MODEL_ID}={model_id}"})


def events(lc, model_id):
    with Session(lc.db) as s:
        return s.exec(select(ModelEvent).where(ModelEvent.model_id == model_id).order_by(ModelEvent.id)).all()


def test_start_chat_stop_with_restart_policy_no(lc, rec, docker_client):
    m = llama(lc)
    m = start_ready(rec, m.id)
    assert m.state is S.RUNNING, m.state_reason
    assert m.load_seconds is not None and m.load_seconds < 60 and m.ready_at >= m.started_at

    [c] = containers_of(docker_client, m.id)
    assert c.id == m.container_id and c.status == "running"
    assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert c.attrs["HostConfig"]["Init"] is True
    # Hardened by default: no privilege gain, a process cap, and a CPU model sees no GPU.
    assert c.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
    assert c.attrs["HostConfig"]["PidsLimit"] == 16384
    assert "NVIDIA_VISIBLE_DEVICES=void" in c.attrs["Config"]["Env"]
    code, out = c.exec_run(["cat", "/proc/1/status"])
    assert code == 0 and "NoNewPrivs:\t1" in out.decode(), out.decode()[-400:]
    assert c.attrs["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(m.host_port)}]
    assert c.labels["cortex.spec-hash"] == m.spec_hash

    r = httpx.post(f"http://127.0.0.1:{m.host_port}/v1/chat/completions", timeout=30,
                   json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    assert r.status_code == 200 and r.json()["model"] == "tiny"
    assert r.json()["choices"][0]["message"]["content"].strip()

    m = lc.stop(m.id, actor="admin:test")
    assert m.state is S.STOPPED and m.container_id is None and m.host_port is None
    assert containers_of(docker_client, m.id) == []
    assert [(e.from_state, e.to_state) for e in events(lc, m.id)] == [
        (S.STOPPED, S.STARTING), (S.STARTING, S.LOADING), (S.LOADING, S.RUNNING),
        (S.RUNNING, S.STOPPING), (S.STOPPING, S.STOPPED)]
    # The admin started and stopped it; readiness was the reconciler's to see.
    assert [e.actor for e in events(lc, m.id)] == ["admin:test", "admin:test", "reconciler", "admin:test",
                                                   "admin:test"]
    assert lc.stop(m.id, actor="admin:test").state is S.STOPPED  # stopping a stopped model: no-op
    assert len(events(lc, m.id)) == 5


def test_refusals_in_the_wrong_state(lc, rec, docker_client):
    m = llama(lc)
    start_ready(rec, m.id)
    with pytest.raises(Refused, match="only a stopped or failed model can start"):
        lc.start(m.id, actor="admin:test")
    with pytest.raises(Refused, match="stop it before deleting"):
        lc.delete(m.id, actor="admin:test")
    assert len(containers_of(docker_client, m.id)) == 1
    lc.stop(m.id, actor="admin:test")
    lc.delete(m.id, actor="admin:test")
    assert crud.get_model(lc.db, m.id) is None
    assert (lc.settings.models_dir / "tiny.gguf").is_file(), "delete never touches model files"
    assert events(lc, m.id)[-1].reason == "model deleted"


def test_two_concurrent_starts_make_one_container(lc, rec, docker_client):
    m = llama(lc)
    results, barrier = [], threading.Barrier(2)

    def go():
        barrier.wait()
        try:
            results.append(lc.start(m.id, actor="admin:test").state)
        except Refused as exc:
            results.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, Refused) for r in results) == 1, results
    assert len(containers_of(docker_client, m.id)) == 1
    assert settle(rec, m.id).state is S.RUNNING
    lc.stop(m.id, actor="admin:test")


def test_two_models_never_share_a_port(lc, rec):
    a, b = llama(lc, "a"), llama(lc, "b")
    a, b = lc.start(a.id, actor="t"), lc.start(b.id, actor="t")
    assert a.host_port != b.host_port
    assert settle(rec, a.id).state is S.RUNNING and settle(rec, b.id).state is S.RUNNING
    lc.stop(a.id, actor="t")
    lc.stop(b.id, actor="t")


def test_missing_image_fails_with_a_reason_and_no_container(lc, rec, docker_client):
    m = llama(lc, image="cortex-test/no-such-image:1")
    m = start_ready(rec, m.id)
    assert m.state is S.FAILED
    assert "image cortex-test/no-such-image:1 is not on the Docker Engine" in m.state_reason
    assert m.host_port is None and containers_of(docker_client, m.id) == []


def test_bad_model_file_fails_while_loading_with_logs_kept(lc, rec, docker_client):
    (lc.settings.models_dir / "broken.gguf").write_bytes(b"this is not a gguf file")
    m = llama(lc, "broken")
    crud.update_model(lc.db, lc.settings, m.id, {"name": "broken", "engine": "llamacpp", "image": LLAMA_IMAGE,
                                                  "source": "broken.gguf", "extra_args": FAST_LLAMA})
    m = start_ready(rec, m.id)
    assert m.state is S.FAILED
    assert "exited with code" in m.state_reason and "while loading" in m.state_reason
    assert containers_of(docker_client, m.id) == [], "a failed model leaves no container"
    kept = lc.logs(m.id)
    assert "broken.gguf" in kept, kept[-500:]
    assert events(lc, m.id)[-1].log_tail == kept or kept in events(lc, m.id)[-1].log_tail


def test_startup_timeout_fails_and_removes(lc, rec, docker_client):
    m = make(lc, name="slow", engine="vllm", image=VLLM_STANDIN_IMAGE, source="org/slow", startup_timeout_s=5,
             extra_env={"STANDIN_LOAD_DELAY": "60"})
    m = start_ready(rec, m.id)
    assert m.state is S.FAILED and m.state_reason.startswith("did not become ready in 5 s")
    assert containers_of(docker_client, m.id) == []
    assert "Loading weights" in lc.logs(m.id)


def test_vllm_loading_phase_and_container_matches_spec(lc, rec, docker_client):
    m = make(lc, name="qwen", engine="vllm", image=VLLM_STANDIN_IMAGE, source="Qwen/Qwen2.5-0.5B-Instruct",
             served_name="qwen-small", dtype="bfloat16", max_model_len=4096, enforce_eager=True,
             hf_token="hf_abcdefghijklmnopqrstuvwxyz", extra_env={"STANDIN_LOAD_DELAY": "1.5"})
    m = lc.start(m.id, actor="admin:test")
    assert m.state is S.LOADING
    with pytest.raises(httpx.TransportError):
        httpx.get(lc.health_url(m), timeout=0.5)  # the stand-in, like vLLM, is not listening yet
    c = docker_client.containers.get(m.container_id)
    spec_args = c.attrs["Config"]["Cmd"]
    assert spec_args[:8] == ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "0.0.0.0", "--port", "8000",
                             "--served-model-name", "qwen-small"]
    assert "--enforce-eager" in spec_args and spec_args[spec_args.index("--dtype") + 1] == "bfloat16"
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert env["HF_TOKEN"] == "hf_abcdefghijklmnopqrstuvwxyz" and env["STANDIN_LOAD_DELAY"] == "1.5"
    assert c.attrs["HostConfig"]["ShmSize"] == 8 * 1024**3
    assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    mounts = {mt["Destination"]: mt for mt in c.attrs["Mounts"]}
    assert mounts["/models"]["RW"] is False and mounts["/root/.cache/huggingface"]["RW"] is True

    m = settle(rec, m.id)
    assert m.state is S.RUNNING and m.load_seconds >= 1.5
    models = httpx.get(f"http://127.0.0.1:{m.host_port}/v1/models").json()
    assert [d["id"] for d in models["data"]] == ["qwen-small"]
    assert "hf_abcdefghijklmnop" not in "".join(f"{e.reason} {e.log_tail}" for e in events(lc, m.id))
    lc.stop(m.id, actor="admin:test")
    assert containers_of(docker_client, m.id) == []


def test_gpu_model_requests_exactly_the_selected_gpus(lc, rec, docker_client):
    from cortex_app.engines import build_spec

    m = llama(lc, "gpu", device="cuda", gpu_ids=[1, 2])
    runtime = lc.runtime
    info = runtime.create(build_spec(m, lc.settings), host_port=0)  # create only: inspectable here
    try:
        host = docker_client.api.inspect_container(info.id)["HostConfig"]
        [req] = host["DeviceRequests"]
        assert req["Driver"] == "nvidia" and req["DeviceIDs"] == ["1", "2"]
        assert req["Capabilities"] == [["gpu"]]
        env = docker_client.api.inspect_container(info.id)["Config"]["Env"]
        assert "NVIDIA_VISIBLE_DEVICES=1,2" in env
    finally:
        runtime.remove(info.id)
    m = start_ready(rec, m.id)
    assert m.state is S.FAILED and m.state_reason.startswith("could not start: no GPU runtime")
    assert containers_of(docker_client, m.id) == []


def test_apply_restarts_on_the_new_config(lc, rec, docker_client):
    m = llama(lc)
    m = start_ready(rec, m.id)
    assert not lc.is_stale(m)
    old_container = m.container_id
    m = crud.update_model(lc.db, lc.settings, m.id, {"name": "tiny", "engine": "llamacpp", "image": LLAMA_IMAGE,
                                                      "source": "tiny.gguf", "extra_args": FAST_LLAMA,
                                                      "context_size": 128})
    assert m.state is S.RUNNING and lc.is_stale(m)
    m = lc.apply(m.id, actor="admin:test")
    assert m.state is S.LOADING  # readiness is the reconciler's to see
    m = settle(rec, m.id)
    assert m.state is S.RUNNING and m.container_id != old_container and not lc.is_stale(m)
    [c] = containers_of(docker_client, m.id)
    args = c.attrs["Config"]["Cmd"]
    assert args[args.index("-c") + 1] == "128"
    lc.stop(m.id, actor="admin:test")


def test_container_dying_at_once_fails_with_exit_code_and_logs(lc, rec, docker_client):
    """busybox has no llama-server entrypoint, so init cannot exec the args: exit 127 while
    loading. The exit code and init's message are kept after the container is removed."""
    m = make(lc, name="crash", engine="llamacpp", image=BUSYBOX_IMAGE, source="tiny.gguf")
    m = start_ready(rec, m.id)
    assert m.state is S.FAILED and m.state_reason == "its container exited with code 127 while loading"
    assert containers_of(docker_client, m.id) == []
    assert "exec -m failed" in lc.logs(m.id)


def test_delete_names_the_state_it_really_left(lc, monkeypatch):
    """Found by the chaos harness: a Stop landing between Delete's read and its delete left an
    event `failed -> stopped (model deleted)` right after `stopping -> stopped`."""
    from sqlmodel import Session as OrmSession

    m = llama(lc)
    lc.transition(m.id, S.FAILED, reason="t", actor="t", allowed_from=(S.STOPPED,))
    real_execute, moved = OrmSession.execute, []

    def execute(self, statement, *a, **kw):
        if not moved and getattr(statement, "is_delete", False):
            moved.append(True)  # the other admin's stop commits first
            lc.transition(m.id, S.STOPPED, reason="stopped", actor="admin:other", allowed_from=(S.FAILED,))
        return real_execute(self, statement, *a, **kw)

    monkeypatch.setattr(OrmSession, "execute", execute)
    lc.delete(m.id, actor="admin:test")
    last_two = events(lc, m.id)[-2:]
    assert [(e.from_state, e.to_state, e.reason) for e in last_two] == [
        (S.FAILED, S.STOPPED, "stopped"), (S.STOPPED, S.STOPPED, "model deleted")]


def test_an_edit_racing_a_delete_is_not_found(lc, monkeypatch):
    """Found by the chaos harness: PUT /api/models/{id} answered 500 (StaleDataError) when a
    DELETE of the same model won the race."""
    m = llama(lc)
    real_validate = crud._validate

    def validate_then_lose_the_race(session, settings, data, **kw):
        clean = real_validate(session, settings, data, **kw)
        lc.delete(m.id, actor="admin:other")
        return clean

    monkeypatch.setattr(crud, "_validate", validate_then_lose_the_race)
    with pytest.raises(LookupError, match="deleted meanwhile"):
        crud.update_model(lc.db, lc.settings, m.id, {"name": "tiny", "engine": "llamacpp", "image": LLAMA_IMAGE,
                                                      "source": "tiny.gguf", "context_size": 128})
