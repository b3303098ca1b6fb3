"""The SQLAlchemy engine (made on first use, never at import time) and the install's id."""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app.models import Installation


def make_engine(db_url: str) -> sa.Engine:
    if db_url.startswith("sqlite"):
        # The scheduler thread and Reflex's event handlers share the file.
        return sa.create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 15})
    return sa.create_engine(
        db_url, pool_pre_ping=True, connect_args={"connect_timeout": 5} if "psycopg" in db_url else {}
    )


@lru_cache(maxsize=None)
def engine_for(db_url: str) -> sa.Engine:
    return make_engine(db_url)


def installation_id(db: sa.Engine) -> str:
    """This install's id (see models.Installation), made by the migration."""
    with Session(db) as session:
        row = session.exec(select(Installation.id)).first()
    if row is None:
        raise RuntimeError("the database has no installation id; run the migrations (make up does)")
    return row
