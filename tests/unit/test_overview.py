"""overview.py: the landing page's verdicts, and its reads on a real (SQLite) database."""

from datetime import timedelta

import pytest
from sqlmodel import Session

from cortex_app import overview
from cortex_app.models import EventKind, ModelEvent, ModelState, WebhookDelivery, WebhookEndpoint, utcnow


def test_every_state_is_counted_in_a_fixed_order():
    counts = overview.state_counts(["running", "failed", "running", "stopped"])
    assert [c["state"] for c in counts] == list(overview.STATE_ORDER)
    assert {c["state"]: c["count"] for c in counts} == {"running": 2, "loading": 0, "starting": 0, "stopping": 0,
                                                       "failed": 1, "stopped": 1}


@pytest.mark.parametrize("args, want", [
    ((0, 0, 0, 0), ("no endpoints", "gray")),
    ((2, 0, 0, 0), ("all delivered", "green")),
    ((2, 3, 0, 0), ("3 sending", "blue")),
    ((2, 3, 0, 1), ("1 retrying", "orange")),
    ((2, 3, 4, 1), ("4 gave up", "red")),
])
def test_delivery_verdict(args, want):
    assert overview.delivery_verdict(*args) == want


def test_reads_failures_of_the_last_day_and_deliveries_by_outcome(tmp_path):
    from tests.conftest import migrate
    from cortex_app.db import make_engine

    url = f"sqlite:///{tmp_path}/o.db"
    migrate(url)
    db = make_engine(url)
    now = utcnow()
    with Session(db) as s:
        s.add(ModelEvent(model_id=1, model_name="old", to_state=ModelState.FAILED, reason="long ago", actor="x",
                         created_at=now - timedelta(days=2)))
        s.add(ModelEvent(model_id=2, model_name="new", to_state=ModelState.FAILED, reason="exit 1", actor="x"))
        s.add(ModelEvent(model_id=2, model_name="new", to_state=ModelState.FAILED, reason="removed: a container",
                         kind=EventKind.CONTAINER, actor="reconciler"))
        s.add(ModelEvent(model_id=2, model_name="new", to_state=ModelState.RUNNING, reason="ok", actor="x"))
        ep = WebhookEndpoint(url="http://127.0.0.1:9/h", secret="whsec_x", event_types=["model.failed"])
        s.add(ep)
        s.commit()
        for status, attempts in (("delivered", 1), ("pending", 0), ("pending", 2), ("pending", 3), ("failed", 9)):
            s.add(WebhookDelivery(endpoint_id=ep.id, message_id=f"m{status}{attempts}", event_type="model.failed",
                                  status=status, attempts=attempts, delivered_at=now if status == "delivered" else None))
        s.add(WebhookDelivery(endpoint_id=ep.id, message_id="mping", event_type="ping", status="failed",
                              attempts=1))  # a "Send test" to a receiver that is down: no outage
        s.commit()
    data = overview.read(db, now=now + timedelta(seconds=1))
    assert [(e.model_name, e.reason) for e in data["failures"]] == [("new", "exit 1")]
    d = data["deliveries"]
    assert (d["endpoints"], d["delivered"], d["pending"], d["retrying"], d["failed"]) == (1, 1, 1, 2, 1)
    assert d["last_ok"] is not None
    db.dispose()
