"""The console's own event log (console_event): what it did or found that is no single
model's history. Written by the reconciler and the scheduler, read by the System page."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app.models import ConsoleEvent

log = logging.getLogger(__name__)


def record(db: sa.Engine, kind: str, subject: str, message: str) -> None:
    """One entry; a database error is logged, never raised (the journal must not stop the work
    it reports on)."""
    try:
        with Session(db) as session:
            session.add(ConsoleEvent(kind=kind[:32], subject=subject[:255], message=message))
            session.commit()
    except sa.exc.SQLAlchemyError as exc:
        log.warning("journal: could not record %s %s: %s", kind, subject, exc)


def recent(db: sa.Engine, limit: int = 20) -> list[ConsoleEvent]:
    with Session(db, expire_on_commit=False) as session:
        return list(session.exec(select(ConsoleEvent).order_by(ConsoleEvent.id.desc()).limit(limit)).all())
