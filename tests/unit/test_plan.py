"""reconcile/plan.py, table-driven: what the reconciler decides for each kind of drift."""

from datetime import datetime, timedelta, timezone

import dataclasses

import pytest

from cortex_app.models import ModelState
from cortex_app.reconcile.plan import (STUCK_AFTER_S, Boot, FailModel, LeaveAlone, MarkRunning, MarkStopped,
                                       ModelView, RemoveContainer, ResetRestarts, RestartModel, legacy_verdict,
                                       overlay_deaths, plan, restart_backoff_s, subject)
from cortex_app.runtime.types import ContainerInfo

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
    return ContainerInfo(id=id, name=f"cortex-model-{model}-m{model}", state=state, labels=labels, exit_code=exit_code, **kw)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_converged_system_plans_nothing():
    models = [row(1), row(2, cid="c2", hash="h2"), row(3, state=S.STOPPED, cid=None), row(4, state=S.FAILED, cid=None)]
    containers = [ctr("c1", 1), ctr("c2", 2, hash="h2")]
    assert plan(models, containers, healthy={1, 2}, now=NOW) == []
    assert plan(models, containers, healthy=set(), now=NOW) == []  # probing is not planning


@pytest.mark.parametrize("containers, reason, still_running", [
    ([], "its container is gone", False),
    ([ctr(state="exited", exit_code=137)], "its container exited with code 137", False),
    ([ctr(state="exited", exit_code=0, oom_killed=True)], "its container was OOM-killed", False),
    ([ctr(state="paused")], "its container is paused", False),
    ([ctr(hash="other")], "does not match the config", True),
])
def test_running_row_without_a_live_container_fails(containers, reason, still_running):
    [a] = plan([row()], containers, set(), NOW)
    assert isinstance(a, FailModel) and a.expect is S.RUNNING and reason in a.reason
    assert a.container_missing == (containers == [])
    assert a.container_id == (containers[0].id if containers else None)
    # Only a container that still serves is stopped before the row says failed.
    assert a.container_running is still_running


def test_a_created_container_under_an_active_row_is_looked_at_again_before_failing():
    """Found by make test: a pass listed the container between its create and its start, then read
    the row (already loading) and failed a model whose container was starting fine."""
    [a] = plan([row(state=S.LOADING)], [ctr(state="created")], set(), NOW)
    assert a.container_missing and a.container_id is None  # the executor inspects it first


def test_a_loading_model_that_dies_says_so():
    [a] = plan([row(state=S.LOADING)], [ctr(state="exited", exit_code=1)], set(), NOW)
    assert a.reason == "its container exited with code 1 while loading" and a.expect is S.LOADING


def test_a_die_event_counts_before_the_list_catches_up():
    listed = [ctr("c1", 1), ctr("c2", 2, state="paused"), ctr("c3", 3, state="exited", exit_code=0)]
    seen = overlay_deaths(listed, {"c1": 137, "c2": None, "c3": 9, "elsewhere": 1})
    assert [(c.id, c.state, c.exit_code) for c in seen] == [("c1", "exited", 137), ("c2", "exited", None),
                                                            ("c3", "exited", 0)]
    [a] = plan([row()], seen[:1], set(), NOW)
    assert a.reason == "its container exited with code 137" and not a.container_running
    assert overlay_deaths(listed, {}) == listed


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


def test_container_of_a_deleted_row_and_one_naming_no_model_are_removed():
    actions = plan([], [ctr("c9", 9), ctr("odd", None)], set(), NOW)
    assert [(a.container_id, a.model_id) for a in actions] == [("c9", 9), ("odd", None)]
    assert "row was deleted" in actions[0].reason and "names no model" in actions[1].reason


def legacy(name="llamacpp-model-old", image="ghcr.io/ggml-org/llama.cpp:server-cuda", policy="unless-stopped",
           command=("/app/llama-server", "-m", "/models/x.gguf"), **labels) -> ContainerInfo:
    return ContainerInfo(id=name, name=name, state="running", labels=labels, restart_policy=policy, image=image,
                         command=command)


ENGINE_IMAGES = {"llamacpp": "registry.local:5000/llama.cpp:server", "vllm": "vllm/vllm-openai:v0.9"}


@pytest.mark.parametrize("c, removed, why", [
    (legacy(), True, "older Cortex install's llamacpp container (restart policy unless-stopped)"),
    (legacy("vllm-model-qwen", "vllm/vllm-openai:latest", "always", ("python3", "-m", "vllm.entrypoints.openai")),
     True, "older Cortex install's vllm container (restart policy always)"),
    (legacy(image="registry.local:5000/llama.cpp:server", command=()), True, "older Cortex"),  # the configured image
    (legacy(image="sha256:abc", command=("llama-server",)), True, "older Cortex"),  # runs the engine, any image
    (legacy(image="busybox", command=("sleep", "600"), **{"cortex.managed": "true"}), True, "older Cortex"),
    (legacy(policy="no"), False, "its restart policy is `no`"),
    (legacy(policy=None), False, "its restart policy is `no`"),
    (legacy(image="busybox", command=("sleep", "600")), False, "does not run llamacpp (image busybox)"),
    (legacy("vllm-model-x", image="ghcr.io/ggml-org/llama.cpp:server", command=("llama-server",)), False,
     "does not run vllm"),
    (legacy("my-llamacpp-model-1"), False, "only contains"),
    (legacy(**{"cortex.instance": "someone-else"}), False, "another Cortex install (cortex.instance=someone-else)"),
])
def test_only_what_is_provably_an_older_install_is_removed(c, removed, why):
    verdict, reason = legacy_verdict(c, ENGINE_IMAGES, instance="mine")
    assert verdict is removed and why in reason


def test_boot_removes_legacy_and_reports_look_alikes():
    boot = Boot(legacy=[legacy(), legacy("llamacpp-model-hand", image="busybox", command=("sh",))],
                engine_images=ENGINE_IMAGES)
    actions = plan([], [], set(), NOW, boot=boot, instance="mine")
    assert actions == [RemoveContainer("llamacpp-model-old", "removed: an older Cortex install's llamacpp container "
                                       "(restart policy unless-stopped)", model_name="llamacpp-model-old"),
                       LeaveAlone("llamacpp-model-hand", "llamacpp-model-hand",
                                  "left alone: it does not run llamacpp (image busybox); not an older install's model")]
    assert plan([], [], set(), NOW) == []  # only at boot


def test_actions_on_one_subject_stay_together():
    """A row's actions run one after another; each container to remove is its own subject (the
    strays of one model go at once, not one 0.25 s grace after another)."""
    actions = [RemoveContainer("x", "r", 1), MarkStopped(1, "r", S.RUNNING), RemoveContainer("y", "r", 1),
               FailModel(2, "r", S.RUNNING), RestartModel(2, 1, 3), LeaveAlone("z", "old", "r")]
    assert [subject(a) for a in actions] == [("container", "x"), ("model", 1), ("container", "y"), ("model", 2),
                                             ("model", 2), ("container", "z")]


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


@pytest.mark.parametrize("state, cid, name, removed", [
    (S.STARTING, None, "cortex-model-1-m1", False),  # the one the Start is making
    (S.STARTING, None, "cortex-model-1-old-name", False),  # made before a rename: still Cortex's
    (S.STARTING, None, "chaos-forged-1", True),  # made by hand with the model's labels
    (S.STARTING, None, "cortex-model-12-m12", True),  # another row's name, this row's labels
    (S.STOPPING, "c1", "anything", False),  # the container being stopped
    (S.STOPPING, "c1", "by-hand", True),
])
def test_an_in_flight_operation_leaves_alone_only_what_cortex_may_be_making(state, cid, name, removed):
    """Found by the chaos harness (seed 784628): a container made by hand for a model whose
    Start waited on a host that had just come back lived until the Start ended, seconds later."""
    fresh = row(state=state, cid=cid, changed=1)
    container = dataclasses.replace(ctr("c1" if name == "anything" else "x"), name=name)
    actions = plan([fresh], [container], set(), NOW)
    if removed:
        [a] = actions
        assert isinstance(a, RemoveContainer) and a.container_id == "x" and a.model_id == 1
        assert f"not a container Cortex made for model m1 (it is {state.value})" in a.reason
    else:
        assert actions == []


def test_boot_default_stops_everything():
    models = [row(1), row(2, state=S.LOADING, cid="c2"), row(3, state=S.STARTING, cid=None, changed=1),
              row(4, state=S.FAILED, cid=None)]
    actions = plan(models, [ctr("c1", 1), ctr("c2", 2)], {1, 2}, NOW, boot=Boot())
    assert [(type(a).__name__, a.model_id) for a in actions] == [
        ("RemoveContainer", 1), ("MarkStopped", 1), ("RemoveContainer", 2), ("MarkStopped", 2),
        ("MarkStopped", 3)]
    assert "models start only when an admin starts them" in actions[1].reason


def test_boot_spares_what_this_console_started_itself():
    """The boot pass waits for the engine when it is down at start; models an admin started on
    this console meanwhile are this run's, not the old one's."""
    since = AGO(10)
    models = [row(1, changed=30), row(2, cid="c2", changed=2), row(3, state=S.STARTING, cid=None, changed=1),
              row(4, state=S.STOPPING, cid=None, changed=20)]
    actions = plan(models, [ctr("c1", 1), ctr("c2", 2)], set(), NOW, boot=Boot(since=since))
    assert [(type(a).__name__, a.model_id) for a in actions] == [
        ("RemoveContainer", 1), ("MarkStopped", 1), ("MarkStopped", 4)]


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


def test_a_container_left_on_a_host_its_model_moved_from_is_removed_and_says_why():
    # Model 9 belongs to another host now; this host's plan sees only its container here.
    [a] = plan([], [ctr("c9", 9)], set(), NOW, elsewhere=frozenset({9}))
    assert isinstance(a, RemoveContainer) and a.model_id == 9
    assert "belongs to another host now" in a.reason


def test_a_hosts_plan_judges_the_containers_made_for_it_and_those_that_say_no_host():
    """A container labelled for another host row is that row's to judge; one that says no host
    (made before hosts, or forged by hand on any engine) is judged wherever it is."""
    from cortex_app.reconcile.plan import of_host

    theirs = dataclasses.replace(ctr("c2", 2), labels={**ctr("c2", 2).labels, "cortex.host-id": "3"})
    bare = ctr("c1", 1)  # no host label
    assert [c.id for c in of_host([theirs, bare], 3)] == ["c2", "c1"]
    assert [c.id for c in of_host([theirs, bare], 1)] == ["c1"]
    assert [a.container_id for a in plan([], of_host([theirs, bare], 1), set(), NOW)] == ["c1"]
