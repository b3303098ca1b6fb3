"""The Overview page's figures: models by state, what failed recently and why, and how
webhook deliveries are going. Reads in plain queries; the verdicts are plain functions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from sqlmodel import Session, func, select

from cortex_app.models import EventKind, Model, ModelEvent, ModelState, WebhookDelivery, WebhookEndpoint, utcnow

STATE_ORDER = ("running", "loading", "starting", "stopping", "failed", "stopped")
RECENT = timedelta(hours=24)


def state_counts(states: list[str]) -> list[dict]:
    """Every state in a fixed order with its count (zero included: the page never reflows)."""
    return [{"state": s, "count": states.count(s)} for s in STATE_ORDER]


def delivery_verdict(endpoints: int, pending: int, failed: int, retrying: int) -> tuple[str, str]:
    """(what the webhook card says, its colour) for the last 24 hours."""
    if endpoints == 0:
        return "no endpoints", "gray"
    if failed:
        return f"{failed} gave up", "red"
    if retrying:
        return f"{retrying} retrying", "orange"
    if pending:
        return f"{pending} sending", "blue"
    return "all delivered", "green"


def recent_failures(db: sa.Engine, since: datetime, limit: int = 8) -> list[ModelEvent]:
    with Session(db, expire_on_commit=False) as s:
        # Transitions into failed only: not the container removals recorded on a failed model.
        return list(s.exec(select(ModelEvent).where(ModelEvent.to_state == ModelState.FAILED,
                                                    ModelEvent.kind == EventKind.STATE,
                                                    ModelEvent.created_at >= since)
                           .order_by(ModelEvent.id.desc()).limit(limit)).all())


def deliveries(db: sa.Engine, since: datetime) -> dict:
    """Counts of the deliveries made since `since`, by outcome, and the latest success."""
    with Session(db) as s:
        endpoints = s.exec(select(func.count()).select_from(WebhookEndpoint)
                           .where(WebhookEndpoint.enabled == True)).one()  # noqa: E712 - SQL, not Python
        # Real deliveries only: a "Send test" to a receiver that is down is not an outage.
        real = [WebhookDelivery.created_at >= since, WebhookDelivery.event_type != "ping"]
        rows = s.exec(select(WebhookDelivery.status, WebhookDelivery.attempts, func.count()).where(*real)
                      .group_by(WebhookDelivery.status, WebhookDelivery.attempts)).all()
        last_ok: Optional[datetime] = s.exec(select(func.max(WebhookDelivery.delivered_at)).where(
            WebhookDelivery.status == "delivered", WebhookDelivery.event_type != "ping")).one()
    counts = {"delivered": 0, "pending": 0, "retrying": 0, "failed": 0}
    for status, attempts, n in rows:
        key = "retrying" if status == "pending" and attempts else status
        counts[key] = counts.get(key, 0) + n
    return {"endpoints": endpoints, **counts, "last_ok": last_ok}


def read(db: sa.Engine, now: Optional[datetime] = None) -> dict:
    now = now or utcnow()
    since = now - RECENT
    with Session(db) as s:
        rows = s.exec(select(Model.id, Model.state)).all()
    states = [st.value for _, st in rows]
    live = [mid for mid, st in rows if st in (ModelState.LOADING, ModelState.RUNNING)]
    return {"counts": state_counts(states), "total": len(states), "live": live,
            "failures": recent_failures(db, since), "deliveries": deliveries(db, since)}
