"""The SQLAlchemy engine, sessions, and the schema check that runs before serving.

The engine is created on first use, never at import time.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import sqlalchemy as sa
from sqlmodel import Session, select

from .settings import load_settings


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


def get_engine() -> sa.Engine:
    return engine_for(load_settings().db_url)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def installation_id(db: sa.Engine) -> str:
    """This install's id (see models.Installation), made by the migration."""
    from cortex_app.models import Installation

    with Session(db) as session:
        row = session.exec(select(Installation.id)).first()
    if row is None:
        raise RuntimeError("the database has no installation id; run the migrations (make up does)")
    return row
