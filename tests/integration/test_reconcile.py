"""The reconciler against the real engine and the real llama-server: every test ends with
"rows == containers", checked from both sides."""

import asyncio
import dataclasses
import time

import httpx
import pytest
from sqlmodel import Session

from cortex_app import crud
from cortex_app.engines import build_spec
from cortex_app.engines.spec import LABEL_MANAGED
from cortex_app.lifecycle import Lifecycle
from cortex_app.models import EventKind, Model, ModelState
from cortex_app.reconcile.loop import Reconciler
from cortex_app.reconcile.probes import LOADING_PROBE_TIMEOUT_S
from cortex_app.runtime.docker import DockerRuntime
from tests.conftest import BUSYBOX_IMAGE, LLAMA_IMAGE, VLLM_STANDIN_IMAGE
from tests.integration.conftest import assert_rows_match_containers, settle, start_ready, wait_for

S = ModelState


def test_docker_kill_is_seen_within_2s_through_events(bed, docker_client):
    bed.scheduler(reconcile_interval_s=60, docker_events=True)  # the periodic pass is far away
    m = bed.start_ready(bed.llama().id, actor="admin:test")
    assert m.state is S.RUNNING
    t0 = time.monotonic()
    docker_client.containers.get(m.container_id).kill()
    failed = wait_for(lambda: (r := bed.row(m.id)).state is S.FAILED and r, timeout=2)
    took = time.monotonic() - t0
    assert "exited with code 137" in failed.state_reason, failed.state_reason
    assert took < 2
    assert_rows_match_containers(bed, docker_client)


def test_readiness_is_seen_a_moment_after_health_answers(bed, docker_client):
    """One readiness path, the one admins run: the scheduler's loading watcher probes a loading
    model often (every 25 ms, then a twentieth of its loading time) and the pass it triggers
    marks it running. (It was a pass a second once the container's own start events had
    passed: up to a second between /health 200 and the row.) The vLLM stand-in loads for
    1.2 s; timed with a 2 ms /health watcher, three starts."""
    import httpx

    bed.scheduler(reconcile_interval_s=60, docker_events=True)
    m = crud.create_model(bed.db, bed.settings, {"name": "slowish", "engine": "vllm", "image": VLLM_STANDIN_IMAGE,
                                                 "source": "org/slowish", "extra_env": {"STANDIN_LOAD_DELAY": "1.2"}})
    lags = []
    for _ in range(3):
        started = bed.lc.start(m.id, actor="admin:test")
        assert started.state is S.LOADING
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1) as http:
            while True:
                assert time.monotonic() < deadline, f"no /health 200 in 30 s: {bed.row(m.id).state_reason}"
                try:
                    if http.get(bed.lc.health_url(started)).status_code == 200:
                        first_200 = time.monotonic()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.002)
        wait_for(lambda: bed.row(m.id).state is S.RUNNING, timeout=5, interval=0.002)
        lags.append(time.monotonic() - first_200)
        assert [e.actor for e in bed.events(m.id) if e.to_state is S.RUNNING][-1] == "reconciler"
        bed.lc.stop(m.id, actor="admin:test")
    assert max(lags) < 0.3, f"/health 200 -> row running took {[f'{x * 1000:.0f} ms' for x in lags]}"


def test_one_slow_removal_holds_up_no_other_model(bed, docker_client, test_labels):
    """A container nobody asked for that ignores SIGTERM took 10.6 s to go (a graceful stop),
    and the pass did nothing else meanwhile. Now it gets 0.25 s, and actions of different
    models run at once: a kill of another model is seen as fast as ever."""
    bed.scheduler(reconcile_interval_s=60, docker_events=True)
    victim = bed.start_ready(bed.llama("victim").id)
    stopped = bed.llama("idle")
    # `run` is a create, then a start: a pass (the victim's start event triggers some) that lists
    # the forged container in between removes it, and the start fails (seen once in CI). Forge it
    # once the passes have settled.
    passes = -1
    while passes != bed.rec.passes:
        passes = bed.rec.passes
        time.sleep(0.3)
    stubborn = docker_client.containers.run(
        BUSYBOX_IMAGE, ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"], detach=True,
        labels={**test_labels, LABEL_MANAGED: "true", "cortex.model-id": str(stopped.id),
                "cortex.spec-hash": "forged"}, restart_policy={"Name": "no"})
    t0 = time.monotonic()
    docker_client.containers.get(victim.container_id).kill()
    wait_for(lambda: bed.row(victim.id).state is S.FAILED, timeout=2, interval=0.01)
    failed_after = time.monotonic() - t0
    # The low-level list: the high-level one inspects each container and races its removal.
    wait_for(lambda: not docker_client.api.containers(all=True, filters={"id": stubborn.id}), timeout=3,
             interval=0.01)
    gone_after = time.monotonic() - t0
    assert failed_after < 1 and gone_after < 1.5, (failed_after, gone_after)
    # Recorded a moment after the engine removed it.
    [ev] = wait_for(lambda: bed.events(stopped.id, kind=EventKind.CONTAINER), timeout=2)
    assert "models run only when an admin starts them" in ev.reason
    assert_rows_match_containers(bed, docker_client)


def test_a_dead_container_started_again_outside_cortex_is_not_the_model(bed, docker_client):
    """Found by the chaos harness: `docker kill` then `docker start` of a model's container,
    faster than a pass, left the row `running` on a container nobody had started. Cortex never
    starts a container twice, so a revived one is not what the admin started: failed, removed."""
    m = bed.start_ready(bed.llama().id)
    c = docker_client.containers.get(m.container_id)
    c.kill()
    c.start()  # revived before any pass looked
    # What the event stream delivers meanwhile (the scheduler's thread does this).
    bed.rec.note_event("die", c.id, {"exitCode": "137"})
    bed.rec.note_event("start", c.id, {})
    bed.reconcile()
    row = bed.row(m.id)
    assert row.state is S.FAILED and row.state_reason == "its container exited with code 137", row.state_reason
    assert_rows_match_containers(bed, docker_client)
    assert docker_client.containers.list(all=True, filters={"id": c.id}) == []


def test_without_events_the_periodic_pass_catches_it(bed, docker_client):
    bed.scheduler(reconcile_interval_s=1, docker_events=False)
    m = bed.start_ready(bed.llama().id, actor="admin:test")
    docker_client.containers.get(m.container_id).kill()
    failed = wait_for(lambda: (r := bed.row(m.id)).state is S.FAILED and r, timeout=3)
    assert "exited with code 137" in failed.state_reason
    assert_rows_match_containers(bed, docker_client)


def test_converged_pass_plans_nothing(bed, docker_client):
    a = bed.start_ready(bed.llama("a").id, actor="t")
    bed.llama("b")
    assert a.state is S.RUNNING
    report = bed.reconcile()
    assert report.actions == [] and report.failures == [] and report.engine_error is None
    assert_rows_match_containers(bed, docker_client)
    bed.lc.stop(a.id, actor="t")


def test_hand_started_container_of_a_stopped_model_is_removed(bed, docker_client, test_labels):
    m = bed.start_ready(bed.llama().id, actor="t")
    cid = m.container_id
    # Simulate an admin (or an old restart policy) bringing the container back by hand:
    # stop the model through Docker only, mark the row stopped as the console would.
    docker_client.containers.get(cid).stop(timeout=5)
    bed.lc.transition(m.id, S.STOPPED, reason="test", actor="t", allowed_from=(S.RUNNING,),
                      container_id=None, host_port=None)
    docker_client.containers.get(cid).start()  # `docker start` by hand
    report = bed.reconcile()
    assert [type(a).__name__ for a in report.actions] == ["RemoveContainer"]
    assert docker_client.containers.list(all=True, filters={"id": cid}) == []
    [ev] = bed.events(m.id, kind=EventKind.CONTAINER)
    assert "models run only when an admin starts them" in ev.reason and ev.actor == "reconciler"
    assert bed.row(m.id).state is S.STOPPED
    assert_rows_match_containers(bed, docker_client)


def test_leftover_of_a_start_cut_short_is_removed_on_boot(bed, docker_client):
    """The state a SIGKILL between 'container created' and 'row updated' leaves: the row says
    `starting`, a labelled container runs. The next console start resolves it."""
    m = bed.llama()
    spec = build_spec(m, bed.settings)
    bed.lc.transition(m.id, S.STARTING, reason="start requested", actor="admin:test", allowed_from=(S.STOPPED,),
                      spec_hash=spec.spec_hash)
    port = bed.lc._claim_port(m.id, m.host_id)
    info = bed.lc.runtime.create_and_start(spec, port)
    # ... console killed here: a fresh process boots on the same database and engine.
    fresh = Reconciler(Lifecycle(bed.db, bed.lc.runtime, bed.settings))
    report = asyncio.run(fresh.reconcile_once(boot=True))
    assert {type(a).__name__ for a in report.actions} == {"RemoveContainer", "MarkStopped"}
    assert docker_client.containers.list(all=True, filters={"id": info.id}) == []
    row = bed.row(m.id)
    assert row.state is S.STOPPED and "interrupted" in row.state_reason and row.host_port is None
    assert_rows_match_containers(bed, docker_client)


def test_a_hand_made_container_of_a_model_mid_start_goes_at_once(bed, docker_client, test_labels):
    """Found by the chaos harness (seed 784628): a container made by hand with a model's labels
    while the model's Start waited on a host that had just come back lived until the Start
    ended, seconds later: the pass left every container of a `starting` model alone. Only the
    one the Start is making (named as Cortex names that model's) is left alone now."""
    m = bed.llama()
    spec = build_spec(m, bed.settings)
    # The Start is under way (as lifecycle.start does it): the row says starting, and the
    # engine has its container; the row learns its id only once it runs.
    bed.lc.transition(m.id, S.STARTING, reason="start requested", actor="admin:test", allowed_from=(S.STOPPED,),
                      spec_hash=spec.spec_hash)
    info = bed.lc.runtime.create_and_start(spec, bed.lc._claim_port(m.id, m.host_id))
    by_hand = docker_client.containers.run(
        BUSYBOX_IMAGE, ["sleep", "600"], detach=True, name=f"by-hand-{m.id}",
        labels={**test_labels, LABEL_MANAGED: "true", "cortex.model-id": str(m.id), "cortex.spec-hash": "forged"},
        restart_policy={"Name": "no"})
    report = bed.reconcile()
    assert [(type(a).__name__, a.container_id) for a in report.actions] == [("RemoveContainer", by_hand.id)]
    assert not docker_client.api.containers(all=True, filters={"id": by_hand.id})
    assert docker_client.containers.get(info.id).status == "running"  # the Start's own: untouched
    [ev] = bed.events(m.id, kind=EventKind.CONTAINER)
    assert f"not a container Cortex made for model {m.name} (it is starting)" in ev.reason
    assert bed.row(m.id).state is S.STARTING
    # The Start ends as lifecycle.start ends it; then rows and containers agree.
    bed.lc.transition(m.id, S.LOADING, reason="container started", actor="admin:test", allowed_from=(S.STARTING,),
                      container_id=info.id)
    assert settle(bed.rec, m.id).state is S.RUNNING
    bed.lc.stop(m.id, actor="t")
    assert_rows_match_containers(bed, docker_client)


def test_boot_removes_only_what_is_provably_an_older_install(bed, docker_client, test_labels):
    """Found by a new user's reading: any name containing `llamacpp-model-` was removed. Only the
    name *and* an engine *and* a restart policy that brings it back make an older install's
    container; look-alikes are left alone and reported (console journal), as is the removal."""
    tag = test_labels["cortex.test-run"]

    def run(name, image, command=None, policy="unless-stopped"):
        return docker_client.containers.run(image, command, name=name, detach=True, labels=test_labels,
                                            restart_policy={"Name": policy})

    old = run(f"llamacpp-model-old-{tag}", LLAMA_IMAGE, ["-m", "/opt/models/tiny.gguf", "-t", "1", "--poll", "0"])
    lookalike = run(f"llamacpp-model-mine-{tag}", BUSYBOX_IMAGE, ["sleep", "600"])
    no_policy = run(f"vllm-model-by-hand-{tag}", VLLM_STANDIN_IMAGE, ["--model", "org/x"], policy="no")
    elsewhere = run(f"my-llamacpp-model-{tag}", LLAMA_IMAGE, ["-m", "/opt/models/tiny.gguf", "-t", "1", "--poll", "0"])
    report = bed.reconcile(boot=True)
    assert docker_client.containers.list(all=True, filters={"id": old.id}) == []
    for kept in (lookalike, no_policy, elsewhere):
        kept.reload()
        assert kept.status == "running", kept.name
    assert {type(a).__name__ for a in report.actions} == {"RemoveContainer", "LeaveAlone"}
    from cortex_app import journal

    said = {e.subject: (e.kind, e.message) for e in journal.recent(bed.db)}
    assert said[old.name] == ("container.removed", "removed: an older Cortex install's llamacpp container "
                                                   "(restart policy unless-stopped)")
    assert said[lookalike.name][0] == "container.left-alone" and "does not run llamacpp" in said[lookalike.name][1]
    assert said[no_policy.name][0] == "container.left-alone" and "restart policy is `no`" in said[no_policy.name][1]
    assert elsewhere.name not in said  # not an older install's name at all


def test_boot_stops_models_by_default_and_adopts_with_keep_models(bed, docker_client):
    a = bed.start_ready(bed.llama("a").id, actor="t")
    b = bed.start_ready(bed.llama("b").id, actor="t")
    keep = dataclasses.replace(bed.settings, keep_models_on_restart=True)
    adopted = asyncio.run(Reconciler(Lifecycle(bed.db, bed.lc.runtime, keep)).reconcile_once(boot=True))
    assert adopted.actions == []
    assert (bed.row(a.id).state, bed.row(a.id).container_id) == (S.RUNNING, a.container_id)
    assert (bed.row(b.id).state, bed.row(b.id).container_id) == (S.RUNNING, b.container_id)
    assert_rows_match_containers(bed, docker_client)

    report = bed.reconcile(boot=True)  # default policy
    assert [type(x).__name__ for x in report.actions].count("MarkStopped") == 2
    assert bed.row(a.id).state is S.STOPPED and bed.row(b.id).state is S.STOPPED
    assert "models start only when an admin starts them" in bed.row(a.id).state_reason
    assert_rows_match_containers(bed, docker_client)


def test_restart_on_failure_retries_then_gives_up(bed, docker_client):
    m = crud.create_model(bed.db, bed.settings, {
        "name": "crashy", "engine": "vllm", "image": VLLM_STANDIN_IMAGE, "source": "org/crashy",
        "extra_env": {"STANDIN_EXIT_CODE": "3"}})
    with Session(bed.db) as s:
        row = s.get(Model, m.id)
        row.restart_on_failure, row.restart_max_attempts = True, 2
        s.add(row)
        s.commit()
    first = bed.start_ready(m.id, actor="admin:test")
    assert first.state is S.FAILED and "restart 1/2 in 2 s" in first.state_reason
    bed.scheduler(reconcile_interval_s=0.5, docker_events=True)
    gave_up = wait_for(lambda: "gave up" in (r := bed.row(m.id)).state_reason and r, timeout=30, interval=0.2)
    assert gave_up.state is S.FAILED and gave_up.restart_attempts == 2
    assert "gave up after 2 restart attempts" in gave_up.state_reason
    starts = [e for e in bed.events(m.id) if e.to_state is S.STARTING]
    assert [e.actor for e in starts] == ["admin:test", "reconciler:restart-on-failure",
                                         "reconciler:restart-on-failure"]
    assert_rows_match_containers(bed, docker_client)


def test_start_on_boot_starts_through_the_normal_path(bed, docker_client):
    m = bed.llama()
    with Session(bed.db) as s:
        row = s.get(Model, m.id)
        row.start_on_boot = True
        s.add(row)
        s.commit()
    bed.scheduler(reconcile_interval_s=0.3, docker_events=True)
    running = wait_for(lambda: (r := bed.row(m.id)).state is S.RUNNING and r, timeout=30)
    assert [e.actor for e in bed.events(m.id) if e.to_state is S.STARTING] == ["console:start-on-boot"]
    assert running.ready_at is not None
    assert_rows_match_containers(bed, docker_client)


def test_health_probes_flip_unhealthy_and_back(bed, docker_client):
    m = bed.start_ready(bed.llama().id, actor="t")
    bed.lc.settings = dataclasses.replace(bed.settings, unhealthy_after=2)
    asyncio.run(bed.rec.probe_running())
    assert bed.row(m.id).health.value == "healthy" and bed.row(m.id).probe_latency_ms > 0
    container = docker_client.containers.get(m.container_id)
    container.pause()  # alive, but not answering
    try:
        bed.rec.probe_timeout = 0.3
        asyncio.run(bed.rec.probe_running())
        asyncio.run(bed.rec.probe_running())
        row = bed.row(m.id)
        assert row.health.value == "unhealthy" and row.consecutive_failures == 2 and row.state is S.RUNNING
    finally:
        container.unpause()
    asyncio.run(bed.rec.probe_running())
    assert bed.row(m.id).health.value == "healthy"
    assert [e.reason for e in bed.events(m.id, kind=EventKind.HEALTH)] == [
        "unhealthy: 2 failed health probes in a row (TimeoutError)", "healthy again"]
    assert len(bed.row(m.id).probe_history) == 4
    bed.lc.stop(m.id, actor="t")


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
        return True
    except httpx.HTTPError:
        return False


def test_a_paused_loading_container_fails_its_model_without_a_probe_wait(bed, docker_client):
    """A paused container never answers /health: the pass must not spend a probe timeout on it
    (the chaos harness saw such a row say `loading` for over a second), it fails the model."""
    m = bed.lc.start(bed.llama().id, actor="t")
    assert m.state is S.LOADING  # only a pass moves it on
    url = bed.lc.health_url(m)
    wait_for(lambda: _answers(url), timeout=30)  # it listens: a probe now waits, not refused
    docker_client.containers.get(m.container_id).pause()
    t0 = time.perf_counter()
    report = asyncio.run(bed.rec.reconcile_once())
    took = time.perf_counter() - t0
    row = bed.row(m.id)
    assert row.state is S.FAILED and "paused" in row.state_reason, row.state_reason
    assert report.duration_s < LOADING_PROBE_TIMEOUT_S, report.duration_s  # a probe would take all of it
    print(f"\npaused container: model failed and container gone in {took:.2f} s")
    assert took < 3.0, took  # the failure itself: a transition, then the paused container discarded
    assert_rows_match_containers(bed, docker_client)


def test_a_list_taken_before_the_start_fails_nothing(bed, docker_client, monkeypatch):
    """Found by make test (the readiness test hung on it): a pass listed the container while it
    was only created, read the row once it said loading, and failed a model that was starting
    fine. The stale list is a stand-in for that moment: the real container runs meanwhile."""
    m = bed.lc.start(bed.llama().id, actor="t")
    assert m.state is S.LOADING
    real = bed.rec.runtime.list_managed
    monkeypatch.setattr(bed.rec.runtime, "list_managed", lambda *a, **kw: [
        dataclasses.replace(c, state="created") if c.id == m.container_id else c for c in real(*a, **kw)])
    asyncio.run(bed.rec.reconcile_once())
    assert bed.row(m.id).state is S.LOADING, bed.row(m.id).state_reason
    assert docker_client.containers.get(m.container_id).status == "running"
    monkeypatch.undo()
    assert settle(bed.rec, m.id).state is S.RUNNING
    bed.lc.stop(m.id, actor="t")


def test_engine_outage_changes_no_state(bed, docker_client):
    m = bed.start_ready(bed.llama().id, actor="t")
    gone = Reconciler(Lifecycle(bed.db, DockerRuntime("unix:///nonexistent/docker.sock"), bed.settings))
    report = asyncio.run(gone.reconcile_once())
    assert report.engine_error and "no Docker Engine answers" in report.engine_error and report.actions == []
    assert bed.row(m.id).state is S.RUNNING
    bed.lc.stop(m.id, actor="t")


def test_dockerd_restart_brings_no_model_back(own_bed, docker_client):
    """A real Docker daemon restart, of an engine this test may restart (make test's private one,
    or a private one beside the machine's own: never skipped)."""
    bed = own_bed
    bed.scheduler(reconcile_interval_s=1, docker_events=True)
    ids = [bed.start_ready(bed.llama(n).id, actor="t").id for n in ("a", "b")]
    assert all(bed.row(i).state is S.RUNNING for i in ids)
    bed.engine.restart()
    rows = wait_for(lambda: (rs := [bed.row(i) for i in ids]) and all(r.state is S.FAILED for r in rs) and rs,
                    timeout=30, interval=0.2)
    for r in rows:
        # Seen as the engine stopped them (a `die` as it shut down), or once it was back.
        assert "Docker Engine restarted" in r.state_reason or "exited with code" in r.state_reason, r.state_reason
    time.sleep(1.5)  # a few more passes: nothing comes back
    assert all(bed.row(i).state is S.FAILED for i in ids)
    assert bed.lc.runtime.list_managed() == []


def test_two_installs_on_one_engine_leave_each_other_alone(bed, docker_client, test_labels, tmp_path):
    """Containers carry their install's id; a console sees (and removes) only its own."""
    from cortex_app.db import installation_id, make_engine
    from tests.conftest import migrate

    mine = DockerRuntime(bed.lc.runtime.host, extra_labels=test_labels, instance=installation_id(bed.db))
    ours = Lifecycle(bed.db, mine, bed.settings)
    m = start_ready(Reconciler(ours), bed.llama().id, actor="t")
    other = DockerRuntime(mine.host, extra_labels=test_labels, instance="another-install")
    assert [c.id for c in mine.list_managed()] == [m.container_id]
    assert other.list_managed() == []
    # The other install (its own database) boots: default policy, remove everything it owns.
    migrate(f"sqlite:///{tmp_path}/other.db")
    other_db = make_engine(f"sqlite:///{tmp_path}/other.db")
    assert installation_id(other_db) != installation_id(bed.db)
    elsewhere = Reconciler(Lifecycle(other_db, other, bed.settings))
    report = asyncio.run(elsewhere.reconcile_once(boot=True))
    assert not any(getattr(a, "container_id", None) == m.container_id for a in report.actions)
    assert docker_client.containers.get(m.container_id).status == "running"
    assert docker_client.containers.get(m.container_id).labels["cortex.instance"] == installation_id(bed.db)
    assert bed.row(m.id).state is S.RUNNING
    ours.stop(m.id, actor="t")
    other_db.dispose()


def test_stale_decisions_never_land_on_a_changed_row(bed):
    """Found in review: a plan made about one container must not fail the row of the next one,
    a restart must not start a model an admin stopped meanwhile, and a probe round must not
    write health onto a model stopped during it."""
    from cortex_app.lifecycle import Refused
    from cortex_app.models import Health
    from cortex_app.reconcile.plan import FailModel, RestartModel
    from cortex_app.reconcile.probes import ProbeResult

    m = bed.llama()
    # 1. planned against container "old"; the row now runs "new" (an Apply happened).
    bed.lc.transition(m.id, S.RUNNING, reason="t", actor="t", allowed_from=(S.STOPPED,), container_id="new")
    bed.rec.apply(FailModel(m.id, "did not become ready", S.RUNNING, container_id="old", row_container="old"))
    assert bed.row(m.id).state is S.RUNNING and bed.row(m.id).container_id == "new"
    # 2. a due restart, but an admin stopped the failed model first.
    bed.lc.transition(m.id, S.STOPPED, reason="admin stop", actor="admin:t", allowed_from=(S.RUNNING,),
                      container_id=None)
    with pytest.raises(Refused):
        bed.rec.apply(RestartModel(m.id, 1, 3))
    assert bed.row(m.id).state is S.STOPPED
    # 3. a probe round that read the row as running, written after it was stopped.
    stale = bed.row(m.id).model_copy(update={"state": S.RUNNING, "health": Health.HEALTHY})
    bed.lc.settings = dataclasses.replace(bed.settings, unhealthy_after=1)
    bed.rec._write_health([stale], {m.id: ProbeResult(m.id, False, None, status=503)}, time.monotonic())
    row = bed.row(m.id)
    assert row.health is Health.UNKNOWN and row.last_probe_at is None
    assert bed.events(m.id, kind=EventKind.HEALTH) == []
