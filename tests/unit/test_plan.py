"""reconcile/plan.py, table-driven: what the reconciler decides for each kind of drift."""

from datetime import datetime, timedelta, timezone

import pytest

from cortex_app.models import ModelState
from cortex_app.reconcile.plan import (STUCK_AFTER_S, Boot, FailModel, MarkRunning, ModelView,
                                       RemoveContainer, ResetRestarts, RestartModel, plan, restart_backoff_s)
from cortex_app.runtime.docker import ContainerInfo

S = ModelState
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
AGO = lambda s: NOW - timedelta(seconds=s)  # noqa: E731


def row(id=1, state=S.RUNNING, cid="c1", hash="h1", changed=30, **kw) -> ModelView:
    return ModelView(id=id, name=f"m{id}", state=state, container_id=cid, spec_hash=hash,
                     state_changed_at=AGO(changed), started_at=AGO(changed + 1), **kw)


def ctr(id="c1", model=1, state="running", hash="h1", exit_code=None, **kw) -> ContainerInfo:
    labels = {"cortex.managed": "true", "cortex.spec-hash": hash, "cortex.model-name": f"m{model}"}
    if model is not None:
        labels["cortex.model-id"] = str(model)
    return ContainerInfo(id=id, name=f"cortex-model-{model}", state=state, labels=labels, exit_code=exit_code, **kw)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_converged_system_plans_nothing():
    models = [row(1), row(2, cid="c2", hash="h2"), row(3, state=S.STOPPED, cid=None), row(4, state=S.FAILED, cid=None)]
    containers = [ctr("c1", 1), ctr("c2", 2, hash="h2")]
    assert plan(models, containers, healthy={1, 2}, now=NOW) == []
    assert plan(models, containers, healthy=set(), now=NOW) == []  # probing is not planning


@pytest.mark.parametrize("containers, reason", [
    ([], "its container is gone"),
    ([ctr(state="exited", exit_code=137)], "its container exited with code 137"),
    ([ctr(state="exited", exit_code=0, oom_killed=True)], "its container was OOM-killed"),
    ([ctr(hash="other")], "does not match the config"),
])
def test_running_row_without_a_live_container_fails(containers, reason):
    [a] = plan([row()], containers, set(), NOW)
    assert isinstance(a, FailModel) and a.expect is S.RUNNING and reason in a.reason
    assert a.container_missing == (containers == [])
    assert a.container_id == (containers[0].id if containers else None)


def test_loading_row_turns_running_on_health_and_fails_past_timeout():
    loading = row(state=S.LOADING, startup_timeout_s=60)
    assert kinds(plan([loading], [ctr()], set(), NOW)) == []
    [a] = plan([loading], [ctr()], {1}, NOW)
    assert isinstance(a, MarkRunning) and a.reason.startswith("ready after")
    late = row(state=S.LOADING, startup_timeout_s=10, changed=30)
    [b] = plan([late], [ctr()], set(), NOW)
    assert isinstance(b, FailModel) and b.reason == "did not become ready in 10 s" and b.container_id == "c1"


@pytest.mark.parametrize("state", [S.STOPPED, S.FAILED])
def test_container_for_a_stopped_or_failed_model_is_removed(state):
    [a] = plan([row(state=state, cid=None)], [ctr()], set(), NOW)
    assert isinstance(a, RemoveContainer) and a.container_id == "c1" and a.model_id == 1
    assert "models run only when an admin starts them" in a.reason


def test_container_of_a_deleted_row_and_a_legacy_one_are_removed():
    actions = plan([], [ctr("c9", 9), ctr("old", None)], set(), NOW)
    assert [(a.container_id, a.model_id) for a in actions] == [("c9", 9), ("old", None)]
    assert "row was deleted" in actions[0].reason and "older install" in actions[1].reason


def test_a_second_container_of_a_running_model_is_removed():
    [a] = plan([row()], [ctr("c1"), ctr("dup")], {1}, NOW)
    assert isinstance(a, RemoveContainer) and a.container_id == "dup"


@pytest.mark.parametrize("state", [S.STARTING, S.STOPPING])
def test_in_flight_operations_are_left_alone_until_stuck(state):
    fresh = row(state=state, changed=5)
    assert plan([fresh], [ctr()], set(), NOW) == []
    stuck = row(state=state, changed=STUCK_AFTER_S + 1)
    actions = plan([stuck], [ctr()], set(), NOW)
    assert kinds(actions) == ["RemoveContainer", "MarkStopped"] and actions[1].expect is state
    assert kinds(plan([stuck], [], set(), NOW)) == ["MarkStopped"]


def test_boot_default_stops_everything():
    models = [row(1), row(2, state=S.LOADING, cid="c2"), row(3, state=S.STARTING, cid=None, changed=1),
              row(4, state=S.FAILED, cid=None)]
    actions = plan(models, [ctr("c1", 1), ctr("c2", 2)], {1, 2}, NOW, boot=Boot())
    assert [(type(a).__name__, a.model_id) for a in actions] == [
        ("RemoveContainer", 1), ("MarkStopped", 1), ("RemoveContainer", 2), ("MarkStopped", 2),
        ("MarkStopped", 3)]
    assert "models start only when an admin starts them" in actions[1].reason


def test_boot_keep_models_adopts_only_matching_healthy_no_restart_containers():
    models = [row(1), row(2, cid="c2", hash="h2"), row(3, cid="c3"), row(4, state=S.LOADING, cid="c4")]
    containers = [ctr("c1", 1), ctr("c2", 2, hash="stale"), ctr("c3", 3), ctr("c4", 4)]
    policies = {"c1": "no", "c2": "no", "c3": "unless-stopped", "c4": "no"}
    actions = plan(models, containers, {1, 2, 3, 4}, NOW, boot=Boot(keep_models=True, restart_policies=policies))
    assert [(type(a).__name__, a.model_id) for a in actions] == [
        ("RemoveContainer", 2), ("MarkStopped", 2), ("RemoveContainer", 3), ("MarkStopped", 3),
        ("MarkRunning", 4)]
    unhealthy = plan([row(1)], [ctr("c1", 1)], set(), NOW, boot=Boot(keep_models=True, restart_policies={"c1": "no"}))
    assert kinds(unhealthy) == ["RemoveContainer", "MarkStopped"]


def test_restart_on_failure_schedules_with_backoff_then_gives_up():
    m = row(restart_on_failure=True, restart_attempts=1, restart_max_attempts=3)
    [a] = plan([m], [ctr(state="exited", exit_code=1)], set(), NOW)
    assert a.next_restart_at == NOW + timedelta(seconds=restart_backoff_s(1)) and "restart 2/3 in 4 s" in a.reason
    spent = row(restart_on_failure=True, restart_attempts=3, restart_max_attempts=3)
    [b] = plan([spent], [], set(), NOW)
    assert b.next_restart_at is None and "gave up after 3 restart attempts" in b.reason


def test_due_restart_is_planned_once_due():
    failed = row(state=S.FAILED, cid=None, restart_on_failure=True, restart_attempts=1, next_restart_at=AGO(1))
    [a] = plan([failed], [], set(), NOW)
    assert a == RestartModel(1, 2, 3)
    not_yet = row(state=S.FAILED, cid=None, restart_on_failure=True, next_restart_at=NOW + timedelta(seconds=5))
    assert plan([not_yet], [], set(), NOW) == []
    assert plan([failed], [], set(), NOW, boot=Boot()) == []  # never at boot


def test_restart_count_resets_after_a_stable_run():
    m = row(restart_attempts=2, ready_at=AGO(500))
    assert plan([m], [ctr()], {1}, NOW) == [ResetRestarts(1)]


def test_backoff_is_capped():
    assert [restart_backoff_s(n) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]


def test_one_list_decides_many_models():
    models = [row(i, cid=f"c{i}", hash=f"h{i}") for i in range(1, 501)]
    containers = [ctr(f"c{i}", i, hash=f"h{i}") for i in range(1, 101)]
    actions = plan(models, containers, set(), NOW)
    assert len(actions) == 400 and all(isinstance(a, FailModel) for a in actions)
