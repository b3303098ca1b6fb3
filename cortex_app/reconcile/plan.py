"""The reconciler's decisions, as pure functions: (rows, containers, probes, now) -> actions.

Level-triggered: it looks only at what is true now, so running it twice in a row gives the
same answer, and a converged system (every row matching its container) plans nothing.
The rules, in the words of the design:
- a row says running/loading but its container is gone or not running -> failed, with the
  exit code (and, with restart_on_failure, a restart scheduled or "gave up after N");
- a managed container for a stopped/failed model, for no model (deleted row), a second
  container of a model, or one whose spec hash differs from the row's -> removed, with an
  event ("no model runs unless an admin asked");
- a row stuck in starting/stopping for longer than STUCK_AFTER_S (the console died mid-way)
  -> its containers removed, row stopped;
- loading + /health 200 -> running; loading past its startup timeout -> removed, failed;
- at console start (boot): by default nothing of the old run keeps running; with
  keep_models a container that matches its row, has restart policy `no` and answers
  /health is adopted. Containers an older Cortex install left (its names, an engine image,
  a restart policy that brought them back) are removed; look-alikes are left alone, reported.

Nothing here imports the docker SDK: containers arrive as runtime/types.ContainerInfo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Hashable, Mapping, Optional, Sequence

from cortex_app.engines.spec import LABEL_HOST, LABEL_INSTANCE, LABEL_MANAGED, container_prefix
from cortex_app.models import ModelState
from cortex_app.runtime.types import ContainerInfo

S = ModelState
ACTIVE = (S.LOADING, S.RUNNING)
STUCK_AFTER_S = 60.0
RESTART_BACKOFF_BASE_S = 2.0
RESTART_BACKOFF_CAP_S = 60.0
RESTART_RESET_AFTER_S = 120.0  # running this long after a restart: the crash loop is over

# The names an older Cortex install gave its containers, and the engine each one ran.
LEGACY_NAME_PREFIXES = {"llamacpp-model-": "llamacpp", "vllm-model-": "vllm"}
_ENGINE_COMMANDS = {"llamacpp": ("llama-server",), "vllm": ("vllm",)}
_UPSTREAM_REPOS = {"llamacpp": ("ghcr.io/ggml-org/llama.cpp",), "vllm": ("vllm/vllm-openai",)}


@dataclass(frozen=True)
class ModelView:
    """What the planner needs of a model row."""

    id: int
    name: str
    state: ModelState
    container_id: Optional[str] = None
    spec_hash: Optional[str] = None
    state_changed_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    ready_at: Optional[datetime] = None
    startup_timeout_s: int = 600
    restart_on_failure: bool = False
    restart_attempts: int = 0
    restart_max_attempts: int = 3
    next_restart_at: Optional[datetime] = None


@dataclass(frozen=True)
class MarkRunning:
    model_id: int
    reason: str
    container_id: Optional[str] = None  # the row's container when planned


@dataclass(frozen=True)
class FailModel:
    """Mark the row failed (if still `expect`); keep the container's last lines; remove it.
    A container that still runs is stopped first, so the row never says failed while its
    model still serves; a dead one is recorded at once and removed after."""

    model_id: int
    reason: str
    expect: ModelState
    container_id: Optional[str] = None
    container_missing: bool = False  # the list did not show it: re-check before failing
    next_restart_at: Optional[datetime] = None
    row_container: Optional[str] = None  # the row's container when planned: acted on only if unchanged
    container_running: bool = False  # it still serves (a startup timeout, a stale spec): stop it gracefully first


@dataclass(frozen=True)
class RemoveContainer:
    """A container nobody asked for: a short grace, then killed and removed."""

    container_id: str
    reason: str
    model_id: Optional[int] = None
    model_name: str = ""


@dataclass(frozen=True)
class LeaveAlone:
    """A container that looks like an older install's but is not provably one: reported, untouched."""

    container_id: str
    name: str
    reason: str


@dataclass(frozen=True)
class MarkStopped:
    model_id: int
    reason: str
    expect: ModelState
    changed_at: Optional[datetime] = None  # the row's state_changed_at when planned: acted on only if unchanged


@dataclass(frozen=True)
class RestartModel:
    model_id: int
    attempt: int
    of: int


@dataclass(frozen=True)
class ResetRestarts:
    model_id: int


Action = MarkRunning | FailModel | RemoveContainer | LeaveAlone | MarkStopped | RestartModel | ResetRestarts


@dataclass(frozen=True)
class Boot:
    """Console start. keep_models: CORTEX_KEEP_MODELS_ON_RESTART. restart_policies: container id
    -> Docker restart policy (from inspect), needed to adopt only `no` containers. since: when
    this console started; a row started after it is this run's, not the old one's (the boot
    pass waits for the engine when it is down at start, and an admin may start models meanwhile).
    legacy: containers found by an older install's names (inspected); engine_images: engine ->
    the image this console runs it with."""

    keep_models: bool = False
    restart_policies: dict[str, Optional[str]] = field(default_factory=dict)
    since: Optional[datetime] = None
    legacy: Sequence[ContainerInfo] = ()
    engine_images: Mapping[str, str] = field(default_factory=dict)

    def is_old(self, at: Optional[datetime]) -> bool:
        """Did this happen before this console started (or is it unknown)?"""
        return self.since is None or at is None or at < self.since


def restart_backoff_s(attempts_so_far: int) -> float:
    return min(RESTART_BACKOFF_BASE_S * (2 ** attempts_so_far), RESTART_BACKOFF_CAP_S)


def exit_reason(c: Optional[ContainerInfo]) -> str:
    if c is None:
        return "its container is gone"
    if c.oom_killed:
        return "its container was OOM-killed"
    if c.exit_code is not None:
        return f"its container exited with code {c.exit_code}"
    return f"its container is {c.state}"


def restart_decision(restart_on_failure: bool, attempts: int, max_attempts: int,
                     now: datetime) -> tuple[str, Optional[datetime]]:
    """For a model that just failed: the reason's suffix, and when to restart it (or None)."""
    if not restart_on_failure:
        return "", None
    if attempts < max_attempts:
        wait = restart_backoff_s(attempts)
        return f"; restart {attempts + 1}/{max_attempts} in {wait:g} s", now + timedelta(seconds=wait)
    return f"; gave up after {attempts} restart attempts", None


def overlay_deaths(containers: Sequence[ContainerInfo], deaths: Mapping[str, Optional[int]]) -> list[ContainerInfo]:
    """Docker publishes a container's `die` event (with its exit code) a good 100 ms before its
    container list stops saying "running" (the engine tears the container's network down in
    between). A container the event stream saw die is taken as exited, with that code."""
    return [dataclasses.replace(c, state="exited", exit_code=deaths[c.id]) if c.id in deaths and c.live else c
            for c in containers]


def _repo(image: str) -> str:
    """The repository part of an image reference (no tag, no digest)."""
    image = image.split("@", 1)[0]
    head, _, tail = image.rpartition(":")
    return head if head and "/" not in tail else image


def legacy_verdict(c: ContainerInfo, engine_images: Mapping[str, str], instance: Optional[str]) -> tuple[bool, str]:
    """(remove?, why) for a container found by an older install's name. Removed only when it is
    provably that install's: the name, an engine it ran (image or command), and a restart policy
    other than `no` (it came back by itself, which is what Cortex must undo)."""
    engine = next((e for prefix, e in LEGACY_NAME_PREFIXES.items() if c.name.startswith(prefix)), None)
    if engine is None:
        return False, "its name only contains an older install's prefix"
    owner = c.labels.get(LABEL_INSTANCE)
    if owner and owner != instance:
        return False, f"it belongs to another Cortex install ({LABEL_INSTANCE}={owner})"
    policy = c.restart_policy or "no"
    if policy == "no":
        return False, "its restart policy is `no`, so nothing brings it back by itself; not an older install's"
    repos = set(_UPSTREAM_REPOS[engine])
    if engine_images.get(engine):
        repos.add(_repo(engine_images[engine]))
    runs_engine = _repo(c.image) in repos or any(
        marker in word for word in c.command for marker in _ENGINE_COMMANDS[engine])
    if not runs_engine and c.labels.get(LABEL_MANAGED) != "true":
        return False, f"it does not run {engine} (image {c.image or '?'}); not an older install's model"
    return True, f"an older Cortex install's {engine} container (restart policy {policy})"


def _fail(m: ModelView, reason: str, now: datetime, c: Optional[ContainerInfo]) -> FailModel:
    suffix, nxt = restart_decision(m.restart_on_failure, m.restart_attempts, m.restart_max_attempts, now)
    return FailModel(model_id=m.id, reason=reason + suffix, expect=m.state, container_id=c.id if c else None,
                     container_missing=c is None, next_restart_at=nxt, row_container=m.container_id,
                     container_running=bool(c and c.running))


def subject(action: Action) -> Hashable:
    """What an action works on: actions on one subject run in order, different subjects at once.
    Removing a container is the container's own business (several strays of one model go at
    once); everything else that acts on a row is its model's."""
    if isinstance(action, (RemoveContainer, LeaveAlone)):
        return ("container", action.container_id)
    return ("model", action.model_id)


def of_host(containers: Sequence[ContainerInfo], host_id: int) -> list[ContainerInfo]:
    """The containers on an engine that a host's plan judges: those made for that host row,
    and those that say no host (made before hosts, or by hand). One labelled for another host
    row is that row's (one engine reached as two hosts, which adding refuses, must never have
    one row's pass remove the other's models)."""
    return [c for c in containers if c.labels.get(LABEL_HOST, str(host_id)) == str(host_id)]


def plan(models: Sequence[ModelView], containers: Sequence[ContainerInfo], healthy: set[int], now: datetime,
         boot: Optional[Boot] = None, instance: Optional[str] = None,
         elsewhere: frozenset[int] = frozenset()) -> list[Action]:
    """One host's plan: its rows and the containers on its engine. `healthy`: ids of
    loading/running models whose /health just answered 200; `elsewhere`: models that belong to
    another host (a container of theirs here was left behind when they moved)."""
    actions: list[Action] = []
    rows = {m.id: m for m in models}
    by_model: dict[Optional[int], list[ContainerInfo]] = {}
    for c in containers:
        mid = c.model_id if c.model_id in rows else None
        by_model.setdefault(mid, []).append(c)

    for c in by_model.pop(None, []):
        why = ("its model belongs to another host now" if c.model_id in elsewhere
               else "no model owns it (its row was deleted)" if c.model_id is not None
               else "it carries Cortex's labels but names no model")
        actions.append(RemoveContainer(c.id, f"removed: {why}", model_id=c.model_id,
                                       model_name=c.labels.get("cortex.model-name", c.name)))
    if boot is not None:
        for c in boot.legacy:
            remove, why = legacy_verdict(c, boot.engine_images, instance)
            actions.append(RemoveContainer(c.id, f"removed: {why}", model_name=c.name) if remove
                           else LeaveAlone(c.id, c.name, f"left alone: {why}"))

    for m in models:
        mine = by_model.get(m.id, [])
        own = next((c for c in mine if c.id == m.container_id), None) if m.container_id else None
        extra = [c for c in mine if c is not own]
        # At boot, what the old run left: rows it was starting, stopping or running.
        old_run = boot is not None and boot.is_old(m.state_changed_at if m.state in (S.STARTING, S.STOPPING)
                                                   else m.started_at)

        if m.state in (S.STARTING, S.STOPPING):
            age = (now - m.state_changed_at).total_seconds() if m.state_changed_at else STUCK_AFTER_S + 1
            if not (old_run or age > STUCK_AFTER_S):
                # An operation is in flight: its container is left alone, and so is one the
                # Start may be making (named as Cortex names that model's). Any other is not
                # Cortex's work, and goes now, not when the operation ends (a Start that
                # waits on a slow host may take seconds).
                for c in mine:
                    if c.id != m.container_id and not c.name.startswith(container_prefix(m.id)):
                        actions.append(RemoveContainer(c.id, f"removed: not a container Cortex made for model "
                                                             f"{m.name} (it is {m.state.value})", m.id, m.name))
                continue
            for c in mine:
                actions.append(RemoveContainer(c.id, f"removed: {m.state.value} was interrupted", m.id, m.name))
            actions.append(MarkStopped(m.id, f"{m.state.value} was interrupted (console stopped mid-way); "
                                             "resolved to stopped", expect=m.state, changed_at=m.state_changed_at))
            continue

        if m.state in (S.STOPPED, S.FAILED):
            for c in mine:
                actions.append(RemoveContainer(
                    c.id, f"removed: a container for {m.state.value} model {m.name} "
                          "(models run only when an admin starts them)", m.id, m.name))
            if (boot is None and m.state == S.FAILED and m.restart_on_failure and m.next_restart_at is not None
                    and m.next_restart_at <= now and m.restart_attempts < m.restart_max_attempts):
                actions.append(RestartModel(m.id, m.restart_attempts + 1, m.restart_max_attempts))
            continue

        # loading / running
        for c in extra:
            actions.append(RemoveContainer(c.id, f"removed: not the container model {m.name} was started with",
                                           m.id, m.name))
        if old_run:
            adopt = (boot.keep_models and own is not None and own.running and own.spec_hash == m.spec_hash
                     and boot.restart_policies.get(own.id) == "no" and m.id in healthy)
            if adopt:
                if m.state == S.LOADING:
                    actions.append(MarkRunning(m.id, "adopted after console restart (healthy)", m.container_id))
                continue
            if own is not None:
                actions.append(RemoveContainer(own.id, "removed: console restarted", m.id, m.name))
            why = ("console restarted; models start only when an admin starts them" if not boot.keep_models
                   else "console restarted; its container could not be adopted")
            actions.append(MarkStopped(m.id, why, expect=m.state, changed_at=m.state_changed_at))
            continue

        if own is None or not own.running:
            # Still `created` under an active row: the list is older than the start (Cortex starts
            # a container before its row says loading). As with one the list does not show, the
            # executor looks again, and fails the model only if it does not run.
            seen = None if own is not None and own.state == "created" else own
            actions.append(_fail(m, exit_reason(seen) + (" while loading" if m.state == S.LOADING else ""), now, seen))
            continue
        if own.spec_hash != m.spec_hash:
            actions.append(_fail(m, "its container does not match the config it was started with", now, own))
            continue
        if m.state == S.LOADING:
            if m.id in healthy:
                took = (now - m.started_at).total_seconds() if m.started_at else 0.0
                actions.append(MarkRunning(m.id, f"ready after {took:.1f} s", m.container_id))
            elif m.started_at and (now - m.started_at).total_seconds() > m.startup_timeout_s:
                actions.append(_fail(m, f"did not become ready in {m.startup_timeout_s} s", now, own))
        elif (m.restart_attempts and m.ready_at
              and (now - m.ready_at).total_seconds() > RESTART_RESET_AFTER_S):
            actions.append(ResetRestarts(m.id))
    return actions
