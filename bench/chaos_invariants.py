"""The chaos harness's referee: what must hold between the model table and the containers,
checked on snapshots of both (pure functions and one stateful tracker; no I/O here).

Invariants (the issue's words):
- every managed container has restart policy `no`;
- at most one container per model at any time (Cortex's own; forged ones are the world's);
- a running container belongs to a row in loading/running (or to an operation in flight on
  its model: starting/stopping) — or is gone within 1 s;
- every loading/running row has exactly one running container with its spec hash, within 1 s
  of the last change;
- no row stays starting/stopping past its bound;
- each model's event timeline is a legal path of the state machine;
- every subscribed state change makes exactly one webhook id, received signed, in order per
  model.
Clocks only run while the console serves and the engine answers ("able"): nobody can fix
anything while either is down.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from cortex_app.reconcile.plan import STUCK_AFTER_S

LIVE = ("running", "paused", "restarting")
ACTIVE = ("loading", "running")
IN_FLIGHT = ("starting", "stopping")
GONE_WITHIN_S = 1.0
AGREE_WITHIN_S = 1.0
STUCK_BOUND_S = STUCK_AFTER_S + 15.0  # the reconciler resolves a stuck row after STUCK_AFTER_S, at its next pass

# The state machine (lifecycle.py, reconcile/plan.py): every edge a state event may take.
LEGAL = {
    ("stopped", "starting"), ("failed", "starting"),
    ("starting", "loading"), ("starting", "failed"), ("starting", "stopped"),
    ("loading", "running"), ("loading", "failed"), ("loading", "stopping"), ("loading", "stopped"),
    ("running", "failed"), ("running", "stopping"), ("running", "stopped"),
    ("stopping", "stopped"), ("stopping", "failed"),
    ("failed", "stopping"),
}
DELETED = "model deleted"  # the last event of a deleted model: stopped|failed -> stopped


@dataclass(frozen=True)
class Ctr:
    id: str
    model_id: Optional[int]
    state: str
    spec_hash: Optional[str] = None
    forged: bool = False  # made or revived (docker start) by the harness: the world's, not Cortex's
    restart_policy: Optional[str] = None  # None: not inspected (yet)

    @property
    def live(self) -> bool:
        return self.state in LIVE


@dataclass(frozen=True)
class Row:
    id: int
    state: str
    container_id: Optional[str] = None
    spec_hash: Optional[str] = None
    state_changed_at: float = 0.0  # unix time


@dataclass(frozen=True)
class Snapshot:
    t: float  # monotonic, when it was taken
    wall: float  # unix time, the same moment
    containers: tuple[Ctr, ...]
    rows: tuple[Row, ...]


def _owned(c: Ctr, rows: dict[int, Row]) -> bool:
    r = rows.get(c.model_id) if c.model_id is not None else None
    if c.forged or r is None:
        return False
    return (r.state in ACTIVE and r.container_id == c.id) or r.state in IN_FLIGHT


def _row_wrong(r: Row, by_id: dict[str, Ctr]) -> Optional[str]:
    """Why an active row disagrees with the containers (None: it agrees)."""
    c = by_id.get(r.container_id) if r.container_id else None
    if c is None:
        return "its container does not exist"
    if c.state != "running":
        return f"its container is {c.state}"
    if c.spec_hash != r.spec_hash:
        return "its container has another spec hash"
    return None


def disagreement(snap: Snapshot, model_id: Optional[int] = None) -> Optional[str]:
    """Why rows and containers do not tell the same story right now (None: they do; time to
    truth ends there). With `model_id`, only that model's row and containers: a fault that hit
    one model has its truth back when that model's is, whatever another fault is doing to
    another model meanwhile."""
    rows = {r.id: r for r in snap.rows}
    by_id = {c.id: c for c in snap.containers}
    for c in snap.containers:
        if model_id is not None and c.model_id != model_id:
            continue
        if c.live and not _owned(c, rows):
            r = rows.get(c.model_id)
            return f"container {c.id[:12]} ({c.state}) of model {c.model_id} (row {r.state if r else 'none'})"
    for r in snap.rows:
        if model_id is not None and r.id != model_id:
            continue
        if r.state in IN_FLIGHT:
            return f"model {r.id} is {r.state}"
        if r.state in ACTIVE and (why := _row_wrong(r, by_id)):
            return f"model {r.id} is {r.state} but {why}"
    return None


def agrees(snap: Snapshot) -> bool:
    return disagreement(snap) is None


class Found(str):
    """A violation's message, with what it is about: the model and container it names, and
    since when (monotonic) the condition held, for the harness to show what it saw around it."""

    model_id: Optional[int] = None
    container_id: Optional[str] = None
    since: Optional[float] = None

    @classmethod
    def of(cls, message: str, model_id: Optional[int] = None, container_id: Optional[str] = None,
           since: Optional[float] = None) -> "Found":
        found = cls(message)
        found.model_id, found.container_id, found.since = model_id, container_id, since
        return found


@dataclass
class Tracker:
    """Checks each snapshot; a condition that persists is reported once."""

    gone_within_s: float = GONE_WITHIN_S
    agree_within_s: float = AGREE_WITHIN_S
    stuck_bound_s: float = STUCK_BOUND_S
    unowned_since: dict[str, float] = field(default_factory=dict)
    wrong_since: dict[tuple, float] = field(default_factory=dict)
    reported: set = field(default_factory=set)

    def _once(self, key, message: str, out: list[str], model_id: Optional[int] = None,
              container_id: Optional[str] = None, since: Optional[float] = None) -> None:
        if key not in self.reported:
            self.reported.add(key)
            out.append(Found.of(message, model_id, container_id, since))

    def check(self, snap: Snapshot, able_since: Optional[float]) -> list[str]:
        """Violations in this snapshot. `able_since`: since when (monotonic) the console serves
        and the engine answers, None while either is down."""
        out: list[str] = []
        rows = {r.id: r for r in snap.rows}
        by_id = {c.id: c for c in snap.containers}

        for c in snap.containers:
            if c.restart_policy not in (None, "no"):
                self._once(("policy", c.id), f"container {c.id[:12]} (model {c.model_id}) has restart policy "
                                             f"{c.restart_policy}", out, c.model_id, c.id, snap.t)

        per_model = Counter(c.model_id for c in snap.containers
                            if not c.forged and (c.live or c.state == "created"))
        for mid, n in per_model.items():
            if n > 1:
                ids = sorted(c.id[:12] for c in snap.containers if c.model_id == mid and not c.forged
                             and (c.live or c.state == "created"))
                self._once(("two", mid, tuple(ids)), f"model {mid} has {n} containers at once: {ids}", out, mid,
                           since=snap.t)

        live_unowned = {c.id for c in snap.containers if c.live and not _owned(c, rows)}
        for cid in list(self.unowned_since):
            if cid not in live_unowned:
                del self.unowned_since[cid]
        for cid in live_unowned:
            first = self.unowned_since.setdefault(cid, snap.t)
            if able_since is None:
                continue
            waited = snap.t - max(first, able_since)
            if waited > self.gone_within_s:
                c = by_id[cid]
                r = rows.get(c.model_id)
                self._once(("unowned", cid), f"{'forged ' if c.forged else ''}container {cid[:12]} ({c.state}) of "
                                             f"model {c.model_id} (row {r.state if r else 'none'}) still there "
                                             f"{waited:.2f} s after nothing owned it", out, c.model_id, cid, first)

        wrong_now = {}
        for r in snap.rows:
            if r.state in ACTIVE and (why := _row_wrong(r, by_id)):
                wrong_now[(r.id, r.state, r.container_id)] = why
        for key in list(self.wrong_since):
            if key not in wrong_now:
                del self.wrong_since[key]
        for key, why in wrong_now.items():
            first = self.wrong_since.setdefault(key, snap.t)
            if able_since is None:
                continue
            waited = snap.t - max(first, able_since)
            if waited > self.agree_within_s:
                self._once(("wrong",) + key, f"model {key[0]} is {key[1]} but {why} ({waited:.2f} s)", out, key[0],
                           key[2], first)

        if able_since is not None:
            able_wall = snap.wall - (snap.t - able_since)
            for r in snap.rows:
                if r.state in IN_FLIGHT and snap.wall - max(r.state_changed_at, able_wall) > self.stuck_bound_s:
                    self._once(("stuck", r.id, r.state_changed_at), f"model {r.id} {r.state} for over "
                                                                    f"{self.stuck_bound_s:.0f} s", out, r.id,
                               r.container_id, snap.t - (snap.wall - r.state_changed_at))
        return out


@dataclass(frozen=True)
class Event:
    id: int
    model_id: int
    from_state: Optional[str]
    to_state: str
    reason: str = ""


def timeline_violations(events: Iterable[Event]) -> list[str]:
    """Each model's state events (in id order) must be one legal path from `stopped`."""
    out: list[str] = []
    last: dict[int, str] = {}
    deleted: set[int] = set()
    for e in sorted(events, key=lambda e: e.id):
        if e.model_id in deleted:
            out.append(f"model {e.model_id}: event {e.id} after it was deleted")
            continue
        before = last.get(e.model_id, "stopped")
        if e.from_state != before:
            out.append(f"model {e.model_id}: event {e.id} leaves {e.from_state}, but the model was {before}")
        if e.reason == DELETED:
            if not (e.from_state in ("stopped", "failed") and e.to_state == "stopped"):
                out.append(f"model {e.model_id}: deleted while {e.from_state}")
            deleted.add(e.model_id)
        elif (e.from_state, e.to_state) not in LEGAL:
            out.append(f"model {e.model_id}: event {e.id} {e.from_state} -> {e.to_state} is not a legal move")
        last[e.model_id] = e.to_state
    return out


SUBSCRIBED = {"running": "model.running", "stopped": "model.stopped", "failed": "model.failed"}


@dataclass(frozen=True)
class Delivery:
    id: int
    message_id: str
    event_type: str
    model_id: Optional[int]
    status: str


def webhook_violations(events: Sequence[Event], deliveries: Sequence[Delivery],
                       received: Sequence[tuple[str, Optional[int]]], bad_signatures: int) -> list[str]:
    """events: the state events while the endpoint existed; deliveries: the outbox (one endpoint);
    received: (webhook id, model id) in arrival order, signatures verified (a replay of an id
    the receiver already has is dropped, as Standard Webhooks receivers do)."""
    out: list[str] = []
    if bad_signatures:
        out.append(f"{bad_signatures} deliveries failed signature verification")
    want: dict[int, list[str]] = {}
    for e in sorted(events, key=lambda e: e.id):
        if e.to_state in SUBSCRIBED and e.reason != DELETED:
            want.setdefault(e.model_id, []).append(SUBSCRIBED[e.to_state])
    made: dict[int, list[str]] = {}
    for d in sorted(deliveries, key=lambda d: d.id):
        made.setdefault(d.model_id, []).append(d.event_type)
        if d.status != "delivered":
            out.append(f"delivery {d.message_id} ({d.event_type}, model {d.model_id}) is {d.status}")
    for mid in sorted(set(want) | set(made), key=str):
        if want.get(mid, []) != made.get(mid, []):
            out.append(f"model {mid}: state changes {want.get(mid, [])} but deliveries {made.get(mid, [])}")
    known = {d.message_id: d for d in deliveries}
    first: dict[str, int] = {}
    for i, (mid, _) in enumerate(received):
        first.setdefault(mid, i)
    for message_id in first:
        if message_id not in known:
            out.append(f"received an id the outbox never made: {message_id}")
    for d in deliveries:
        if d.status == "delivered" and d.message_id not in first:
            out.append(f"delivery {d.message_id} is marked delivered but never arrived")
    by_model: dict[Optional[int], list[Delivery]] = {}
    for d in sorted(deliveries, key=lambda d: d.id):
        if d.message_id in first:
            by_model.setdefault(d.model_id, []).append(d)
    for mid, ds in by_model.items():
        arrival = [first[d.message_id] for d in ds]
        if arrival != sorted(arrival):
            out.append(f"model {mid}: webhooks arrived out of order")
    return out


def _ctr_line(c: Ctr) -> str:
    return f"{c.id[:12]} {c.state}" + (" (the harness's)" if c.forged else "") + (
        f" spec {c.spec_hash[:8]}" if c.spec_hash else "")


def around(found: Found, snaps: Sequence[Snapshot], before_s: float = 2.0) -> list[str]:
    """What the snapshots showed of a violation's subject (its model's row, that model's and the
    named container's containers), from `before_s` before its condition began: one line each
    time that changed, timed from the condition's start."""
    if found.since is None or (found.model_id is None and found.container_id is None):
        return []
    out, last = [], None
    for snap in snaps:
        if snap.t < found.since - before_s:
            continue
        row = next((r for r in snap.rows if r.id == found.model_id), None) if found.model_id is not None else None
        ctrs = [c for c in snap.containers if (found.model_id is not None and c.model_id == found.model_id)
                or c.id == found.container_id]
        seen = (f"row {found.model_id}: " + (f"{row.state}" + (f", container {row.container_id[:12]}"
                                                              if row.container_id else "") if row else "none")
                if found.model_id is not None else "")
        seen += "  containers: " + (", ".join(_ctr_line(c) for c in ctrs) or "none")
        if seen != last:
            out.append(f"{snap.t - found.since:+7.2f} s  {seen}")
            last = seen
    return out
