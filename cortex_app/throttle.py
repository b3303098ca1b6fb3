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
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from cortex_app.models import SignInThrottle

ACCOUNT_FREE = 3  # wrong passwords in a row for one account from one address, then back-off
ADDRESS_FREE = 10  # sign-ins from one address that failed, across accounts
MAX_LOCK_S = 60


def backoff_s(attempts: int, free: int) -> Optional[int]:
    """How long a key is locked after its `attempts`-th attempt in a row (None: not locked)."""
    if attempts < free:
        return None
    return min(2 ** (attempts - free), MAX_LOCK_S)


def keys(username: str, address: str) -> list[tuple[str, int]]:
    """(hashed key, free attempts) for one sign-in."""
    def h(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    return [(h(f"account:{username}\x00{address}"), ACCOUNT_FREE), (h(f"address:{address}"), ADDRESS_FREE)]


def reserve(db: sa.Engine, keyset: list[tuple[str, int]], now: datetime) -> int:
    """Count one attempt on every key, atomically: 0 when the attempt may go ahead, else the
    seconds to wait (and nothing is counted)."""
    table = SignInThrottle.__table__
    with Session(db) as s:
        insert = (postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert)(table)
        for key, free in keyset:
            s.execute(insert.values(key=key, attempts=0, locked_until=None).on_conflict_do_nothing(
                index_elements=["key"]))
            row = s.execute(table.update().where(
                table.c.key == key, sa.or_(table.c.locked_until.is_(None), table.c.locked_until <= now))
                .values(attempts=table.c.attempts + 1).returning(table.c.attempts)).first()
            if row is None:  # locked: nothing is counted
                locked = s.execute(sa.select(table.c.locked_until).where(table.c.key == key)).scalar_one()
                s.rollback()
                return max(1, int((locked - now).total_seconds()) + 1)
            if (wait := backoff_s(row[0], free)) is not None:
                s.execute(table.update().where(table.c.key == key).values(locked_until=now + timedelta(seconds=wait)))
        s.commit()
    return 0


def clear(db: sa.Engine, keyset: list[tuple[str, int]]) -> None:
    """A right password: its keys start afresh."""
    table = SignInThrottle.__table__
    with Session(db) as s:
        s.execute(table.delete().where(table.c.key.in_([k for k, _ in keyset])))
        s.commit()
