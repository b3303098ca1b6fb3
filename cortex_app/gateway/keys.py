"""Inference keys: made, listed and revoked here (the Keys page and /api/keys call these), and
checked on every gateway request against an in-memory snapshot (no database read per request).

A key reads `sk-cortex-<lookup>-<secret>`: the lookup id finds its row, and only the key's
SHA-256 is stored (a key is 256 random bits: a fast hash suffices, unlike a password). The
full key is shown once, at creation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Sequence

import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app.models import InferenceKey, Model, utcnow

KEY_PREFIX = "sk-cortex-"
LOOKUP_LEN = 10
EXPIRY_DAYS = (0, 7, 30, 90, 365)  # 0: never
MAX_RPM = 100_000
_LOOKUP_ALPHABET = string.ascii_lowercase + string.digits


class KeyInvalid(ValueError):
    """A key request that cannot be made as asked; nothing was written."""


@dataclass(frozen=True)
class KeyView:
    """What the gateway needs of a key, read once per snapshot."""

    id: int
    name: str
    key_hash: str
    models: Optional[frozenset[str]]  # None: every model
    rpm_limit: Optional[int]
    expires_ts: Optional[float]
    revoked: bool


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def lookup_of(presented: str) -> Optional[str]:
    """The lookup id of something shaped like an inference key, else None."""
    if not presented.startswith(KEY_PREFIX):
        return None
    lookup, sep, secret = presented[len(KEY_PREFIX):].partition("-")
    return lookup if sep and len(lookup) == LOOKUP_LEN and secret else None


def new_key() -> tuple[str, str]:
    """(the key, its lookup id)."""
    lookup = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(LOOKUP_LEN))
    return f"{KEY_PREFIX}{lookup}-{secrets.token_urlsafe(32)}", lookup


def verify(view: Optional[KeyView], presented: str, now_ts: float) -> Optional[str]:
    """None when the key may be used now, else why not (said to the caller as a 401)."""
    if view is None or not hmac.compare_digest(view.key_hash, key_hash(presented)):
        return "invalid inference key"
    if view.revoked:
        return "this inference key was revoked"
    if view.expires_ts is not None and view.expires_ts <= now_ts:
        return "this inference key has expired"
    return None


def allows(view: KeyView, served_name: str) -> bool:
    return view.models is None or served_name in view.models


class RateLimiter:
    """Requests per minute per key, over a sliding 60 s window (this process's requests)."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._seen: dict[int, deque] = {}

    def take(self, key_id: int, limit: Optional[int], now: float) -> float:
        """0 when the request may go (and it is counted), else the seconds until it may."""
        if not limit:
            return 0.0
        q = self._seen.setdefault(key_id, deque())
        while q and q[0] <= now - self.WINDOW_S:
            q.popleft()
        if len(q) >= limit:
            return q[0] + self.WINDOW_S - now
        q.append(now)
        return 0.0


# --- the rows (Keys page, /api/keys) ------------------------------------------------------

def public_names(db) -> list[str]:
    """What a client may name as `model` (and a key may be limited to): every served name and
    every alias, sorted."""
    with Session(db) as s:
        served = s.exec(select(Model.served_name)).all()
        aliases = s.exec(select(Model.alias).where(Model.alias.is_not(None)).distinct()).all()
    return sorted({*served, *aliases})


def create_key(db: sa.Engine, name: str, models: Optional[Sequence[str]] = None, expires_in_days: int = 0,
               rpm_limit: Optional[int] = None) -> tuple[InferenceKey, str]:
    """A new key: (its row, the key, shown once). KeyInvalid names what is wrong."""
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise KeyInvalid("name: 1 to 64 characters")
    if expires_in_days not in EXPIRY_DAYS:
        raise KeyInvalid("expiry: use one of " + ", ".join(f"{d} days" if d else "never" for d in EXPIRY_DAYS))
    if rpm_limit is not None and (isinstance(rpm_limit, bool) or not isinstance(rpm_limit, int)
                                  or not 1 <= rpm_limit <= MAX_RPM):
        raise KeyInvalid(f"requests per minute: a whole number from 1 to {MAX_RPM}, or none for no limit")
    if models is not None:
        wanted = sorted({str(m).strip() for m in models if str(m).strip()})
        if not wanted:
            raise KeyInvalid("models: name at least one model, or allow every model")
        known = set(public_names(db))
        unknown = [m for m in wanted if m not in known]
        if unknown:
            raise KeyInvalid("models: no model is served or aliased as " + ", ".join(repr(m) for m in unknown))
        models = wanted
    key, lookup = new_key()
    now = utcnow()
    row = InferenceKey(name=name, lookup=lookup, key_hash=key_hash(key), models=models, rpm_limit=rpm_limit,
                       created_at=now, expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None)
    with Session(db) as s:
        s.add(row)
        s.commit()
        s.refresh(row)
    return row, key


def list_keys(db: sa.Engine) -> list[InferenceKey]:
    with Session(db) as s:
        return list(s.exec(select(InferenceKey).order_by(InferenceKey.id)).all())


def revoke_key(db: sa.Engine, key_id: int) -> bool:
    """The key stops working (at once in this process, within a second elsewhere); its row and
    usage stay. False when there is no such live key."""
    with Session(db) as s:
        n = s.execute(sa.update(InferenceKey).where(InferenceKey.id == key_id, InferenceKey.revoked_at.is_(None))
                      .values(revoked_at=utcnow())).rowcount
        s.commit()
    return bool(n)


def key_views(db: sa.Engine) -> dict[str, KeyView]:
    """Every key by lookup id, for the gateway's snapshot."""
    with Session(db) as s:
        rows = s.exec(select(InferenceKey)).all()
    return {r.lookup: KeyView(r.id, r.name, r.key_hash, frozenset(r.models) if r.models is not None else None,
                              r.rpm_limit, r.expires_at.timestamp() if r.expires_at else None,
                              r.revoked_at is not None) for r in rows}


def shown_prefix(row: InferenceKey) -> str:
    """How a key is shown after creation: enough to recognise it, never enough to use it."""
    return f"{KEY_PREFIX}{row.lookup}-…"
