"""Sign-in throttling that holds under parallel guesses.

Each sign-in first *reserves* an attempt, atomically, for two keys: the account from this
client address, and the client address across all accounts. A reservation counts the attempt
before the password is checked, and once a key is over its free attempts it also locks the key
for a back-off, so of 64 guesses sent at once only the free ones reach the password hash; the
rest are refused with the wait, without any hash work. A right password clears its keys.

Keys are per address: someone else's guesses from another address never lock an admin out,
and the answer never depends on whether the account exists. Keys are stored hashed (a
username field may hold a mistyped password).
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from cortex_app.models import SignInThrottle, utcnow

ACCOUNT_FREE = 3  # wrong passwords in a row for one account from one address, then back-off
ADDRESS_FREE = 10  # sign-ins from one address that failed, across accounts
MAX_LOCK_S = 60
FORGET_AFTER = timedelta(hours=24)  # a key idle this long starts afresh (and is dropped)
FORGET_EVERY_S = 3600.0
_forgotten_at = float("-inf")


def backoff_s(attempts: int, free: int) -> Optional[int]:
    """How long a key is locked after its `attempts`-th attempt in a row (None: not locked)."""
    if attempts < free:
        return None
    return min(2 ** (attempts - free), MAX_LOCK_S)


def attempts_within(seconds: float, free: int) -> int:
    """The most attempts one key lets reach the password check within `seconds`: the free ones
    at once, then one each time a back-off runs out (what a flood can get, and no more)."""
    attempts, elapsed = free, 0.0
    while (wait := backoff_s(attempts, free)) is not None and elapsed + wait <= seconds:
        elapsed += wait
        attempts += 1
    return attempts


def keys(username: str, address: str) -> list[tuple[str, int]]:
    """(hashed key, free attempts) for one sign-in."""
    def h(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    return [(h(f"account:{username}\x00{address}"), ACCOUNT_FREE), (h(f"address:{address}"), ADDRESS_FREE)]


def reserve(db: sa.Engine, keyset: list[tuple[str, int]]) -> int:
    """Count one attempt on every key, atomically: 0 when the attempt may go ahead, else the
    whole seconds to wait (and nothing is counted). One upsert per key, always in the order of
    `keyset` (clear() deletes in that order too: two sign-ins never lock rows crosswise). A key
    idle for FORGET_AFTER starts afresh."""
    global _forgotten_at
    if time.monotonic() - _forgotten_at > FORGET_EVERY_S:
        _forgotten_at = time.monotonic()
        forget_idle(db)
    while (wait := _reserve_once(db, keyset, utcnow())) is None:
        pass  # a locked row was cleared meanwhile (a right password): count again
    return wait


def _reserve_once(db: sa.Engine, keyset: list[tuple[str, int]], now: datetime) -> Optional[int]:
    table = SignInThrottle.__table__
    with Session(db) as s:
        insert = (postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert)(table)
        stale = table.c.last_attempt_at < now - FORGET_AFTER
        for key, free in keyset:
            attempts = s.execute(insert.values(key=key, attempts=1, locked_until=None, last_attempt_at=now)
                                 .on_conflict_do_update(
                                     index_elements=["key"],
                                     set_={"attempts": sa.case((stale, 1), else_=table.c.attempts + 1),
                                           "last_attempt_at": now},
                                     where=sa.or_(table.c.locked_until.is_(None), table.c.locked_until <= now))
                                 .returning(table.c.attempts)).scalar()
            if attempts is None:  # locked: nothing is counted
                locked = s.execute(sa.select(table.c.locked_until).where(table.c.key == key)).scalar()
                s.rollback()
                return max(1, math.ceil((locked - now).total_seconds())) if locked else None
            if (lock := backoff_s(attempts, free)) is not None:
                s.execute(table.update().where(table.c.key == key).values(locked_until=now + timedelta(seconds=lock)))
        s.commit()
    return 0


def forget_idle(db: sa.Engine) -> int:
    """Drop keys idle for FORGET_AFTER and not locked: the table stays as small as the last day's
    failed sign-ins."""
    table = SignInThrottle.__table__
    now = utcnow()
    with Session(db) as s:
        gone = s.execute(table.delete().where(table.c.last_attempt_at < now - FORGET_AFTER, sa.or_(
            table.c.locked_until.is_(None), table.c.locked_until <= now))).rowcount
        s.commit()
    return gone


def clear(db: sa.Engine, keyset: list[tuple[str, int]]) -> None:
    """A right password: its keys start afresh (deleted in reserve()'s order)."""
    table = SignInThrottle.__table__
    with Session(db) as s:
        for key, _ in keyset:
            s.execute(table.delete().where(table.c.key == key))
        s.commit()
