"""Admin accounts and sign-in sessions.

Passwords: argon2id (argon2-cffi). Sessions: a random 256-bit token in the browser's
cookie, its SHA-256 in the database with an expiry; sign-out deletes it. Wrong passwords
slow that account down from that address, and that address (throttle.py): after 3 in a row,
each further try must wait 2^(n-3) s (max 60 s).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, VerifyMismatchError
from sqlmodel import Session, select

from cortex_app import throttle
from cortex_app.models import AdminSession, AdminUser, ApiToken, SetupCode, TokenScope, utcnow

SESSION_TTL = timedelta(hours=12)
HANDOFF_TTL = timedelta(minutes=1)  # a page's sign-in, waiting for the page to adopt it
HASH_WORKERS = 2
password_checks = 0  # argon2 verifications since start (/metrics: cortex_password_checks_total)
_lock = threading.Lock()  # the counter and the pools
_pools: dict[str, ThreadPoolExecutor] = {}  # made on first use
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10
FREE_FAILURES = throttle.ACCOUNT_FREE
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user does not exist, so a wrong name costs what a wrong password does
    (made on first use: no hash work at import)."""
    return _hasher.hash("cortex-no-such-user")


class AuthError(Exception):
    def __init__(self, message: str, retry_after_s: int = 0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def admin_exists(db: sa.Engine) -> bool:
    with Session(db) as s:
        return s.exec(select(AdminUser.id).limit(1)).first() is not None


def check_new_credentials(username: str, password: str) -> dict[str, str]:
    errors = {}
    if not USERNAME.match(username or ""):
        errors["username"] = "use 1-64 letters, digits or _ . @ -"
    if len(password or "") < MIN_PASSWORD:
        errors["password"] = f"use at least {MIN_PASSWORD} characters"
    return errors


def _require_new_credentials(username: str, password: str) -> None:
    if errors := check_new_credentials(username, password):
        raise AuthError("; ".join(f"{k}: {v}" for k, v in errors.items()))


def create_admin(db: sa.Engine, username: str, password: str, *, only_if_none: bool = True) -> AdminUser:
    """Create an admin. With only_if_none (first run), refuse once any admin exists."""
    _require_new_credentials(username, password)
    with Session(db, expire_on_commit=False) as s:
        if only_if_none and s.exec(select(AdminUser.id).limit(1)).first() is not None:
            raise AuthError("an admin account exists already; sign in instead")
        user = AdminUser(username=username, password_hash=_hasher.hash(password))
        s.add(user)
        try:
            s.commit()
        except sa.exc.IntegrityError:
            raise AuthError(f"the username {username!r} is taken") from None
        return user


# Setup codes: 16 characters of an alphabet without look-alikes (80 bits), shown in groups of 4.
SETUP_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _setup_hash(code: str) -> str:
    clean = "".join(ch for ch in (code or "").upper() if ch.isalnum())
    return hashlib.sha256(f"cortex-setup:{clean}".encode()).hexdigest()


def new_setup_code(db: sa.Engine) -> str:
    """A fresh one-time setup code (any earlier one stops working); only its hash is stored."""
    code = "".join(secrets.choice(SETUP_ALPHABET) for _ in range(16))
    with Session(db) as s:
        s.execute(sa.delete(SetupCode))
        s.add(SetupCode(code_hash=_setup_hash(code)))
        s.commit()
    return "-".join(code[i:i + 4] for i in range(0, 16, 4))


def forget_setup_codes(db: sa.Engine) -> None:
    with Session(db) as s:
        s.execute(sa.delete(SetupCode))
        s.commit()


def create_first_admin(db: sa.Engine, username: str, password: str, setup_code: str) -> AdminUser:
    """The first admin, from the browser: needs the setup code printed at the console's start.
    The code is consumed in the same transaction that creates the admin, so of two setups at
    once exactly one succeeds; a wrong code changes nothing."""
    _require_new_credentials(username, password)
    code_hash = _setup_hash(setup_code)

    def refuse() -> AuthError:
        if admin_exists(db):
            return AuthError("an admin account exists already; sign in instead")
        return AuthError("wrong setup code: use the one the console printed when it started "
                         "(make up's output, or the container's log)")

    with Session(db) as s:  # a wrong code costs no password hash
        if s.get(SetupCode, code_hash) is None:
            raise refuse()
    password_hash = _hasher.hash(password)  # the slow part, outside the transaction
    with Session(db, expire_on_commit=False) as s:
        if not s.execute(sa.delete(SetupCode).where(SetupCode.code_hash == code_hash)).rowcount:
            s.rollback()
            raise refuse()  # another setup took it meanwhile
        if s.exec(select(AdminUser.id).limit(1)).first() is not None:
            s.rollback()
            raise AuthError("an admin account exists already; sign in instead")
        user = AdminUser(username=username, password_hash=password_hash)
        s.add(user)
        s.commit()
        return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(db: sa.Engine, username: str, password: str, address: str = "", *, handoff: bool = False) -> str:
    """A new session token, or AuthError (wrong credentials, or wait `retry_after_s`).
    `address`: the client's, for throttling (throttle.py): the attempt is counted at once,
    before the password is checked, and refused without any hash work while its keys are
    locked. All of it runs on the sign-in pools (_off_loop). With `handoff` (the sign-in
    page), a one-time code for `adopt` instead of the token (see models.AdminSession)."""
    now = utcnow()
    keyset = throttle.keys(username, address)
    if wait := await _off_loop("sign-in", throttle.reserve, db, keyset):
        raise AuthError(f"too many wrong passwords; try again in {wait} s", retry_after_s=wait)
    user = await _off_loop("sign-in", _user, db, username)
    # Verified even when the user does not exist: a wrong name costs what a wrong password does.
    if not await run_hashing(_verify, user.password_hash if user else None, password) or user is None:
        raise AuthError("wrong username or password")
    rehashed = await run_hashing(_hasher.hash, password) if _hasher.check_needs_rehash(user.password_hash) else None
    return await _off_loop("sign-in", _open_session, db, keyset, user.id, rehashed, now, handoff)


def _user(db: sa.Engine, username: str) -> Optional[AdminUser]:
    with Session(db, expire_on_commit=False) as s:
        return s.exec(select(AdminUser).where(AdminUser.username == username)).first()


def _open_session(db: sa.Engine, keyset, user_id: int, rehashed: Optional[str], now, handoff: bool) -> str:
    throttle.clear(db, keyset)
    token = secrets.token_urlsafe(32)
    code = secrets.token_urlsafe(32) if handoff else None  # the token is then never given out
    with Session(db) as s:
        values = {"last_login_at": now} | ({"password_hash": rehashed} if rehashed else {})
        s.execute(sa.update(AdminUser).where(AdminUser.id == user_id).values(**values))
        s.add(AdminSession(token_hash=_token_hash(token), user_id=user_id,
                           expires_at=now + (HANDOFF_TTL if handoff else SESSION_TTL),
                           handoff_hash=_token_hash(code) if code else None))
        s.commit()
    return code or token


def adopt(db: sa.Engine, code: str) -> Optional[str]:
    """The session a sign-in page's one-time code stands for, given its token now (for the
    HttpOnly cookie); None for an unknown, used or expired code. Once only, even when two
    requests race for one code."""
    if not code:
        return None
    token, now = secrets.token_urlsafe(32), utcnow()
    with Session(db) as s:
        done = s.execute(sa.update(AdminSession)
                         .where(AdminSession.handoff_hash == _token_hash(code), AdminSession.expires_at > now)
                         .values(token_hash=_token_hash(token), handoff_hash=None, expires_at=now + SESSION_TTL))
        s.commit()
    return token if done.rowcount == 1 else None


def _verify(password_hash: Optional[str], password: str) -> bool:
    global password_checks
    with _lock:
        password_checks += 1
    dummy = _dummy_hash()  # made on the first check, known user or not: no first-time tell
    try:
        return _hasher.verify(password_hash or dummy, password)
    except (VerifyMismatchError, VerificationError):
        return False


async def run_hashing(fn, *args):
    """Run `fn` (argon2 work, 64 MiB each) on the password-hash pool: HASH_WORKERS at a time,
    the rest queued."""
    return await _off_loop("password-hash", fn, *args)


async def _off_loop(pool: str, fn, *args):
    """Sign-in work runs on pools of its own ("sign-in": the throttle and the session rows;
    "password-hash"), never on the default one that the reconciler and the pages use: a flood
    of sign-ins queues there and holds nothing else up."""
    with _lock:
        if pool not in _pools:
            _pools[pool] = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix=pool)
    return await asyncio.get_running_loop().run_in_executor(_pools[pool], functools.partial(fn, *args))


def session_user(db: sa.Engine, token: Optional[str]) -> Optional[str]:
    """The username a session token belongs to, if the session is live."""
    if not token:
        return None
    with Session(db) as s:
        row = s.exec(select(AdminUser.username, AdminSession.expires_at)
                     .join(AdminUser, AdminUser.id == AdminSession.user_id)
                     .where(AdminSession.token_hash == _token_hash(token))).first()
    if row is None or row[1] <= utcnow():
        return None
    return row[0]


def sign_out(db: sa.Engine, token: Optional[str]) -> None:
    if not token:
        return
    with Session(db) as s:
        s.execute(sa.delete(AdminSession).where(AdminSession.token_hash == _token_hash(token)))
        s.commit()


# --- API tokens (scripts, monitoring) ---------------------------------------------------

TOKEN_EXPIRY_DAYS = (0, 7, 30, 90, 365)  # what the Settings page offers; 0: never expires
LAST_USE_GRANULARITY = timedelta(minutes=1)  # last_used_at is written at most this often


@dataclass(frozen=True)
class TokenCaller:
    name: str
    scope: TokenScope


def create_api_token(db: sa.Engine, name: str, scope: str = "read", expires_in_days: int = 0) -> str:
    """A new token: returned once, stored only as its SHA-256. AuthError on a bad scope or
    expiry (nothing is made)."""
    try:
        scope_value = TokenScope(scope)
    except ValueError:
        raise AuthError(f"unknown scope {scope!r}: use one of " + ", ".join(s.value for s in TokenScope)) from None
    if expires_in_days not in TOKEN_EXPIRY_DAYS:
        raise AuthError("expiry: use one of " + ", ".join(f"{d} days" if d else "never" for d in TOKEN_EXPIRY_DAYS))
    name = (name or "").strip()[:64] or "token"
    token = "ctx_" + secrets.token_urlsafe(32)
    now = utcnow()
    with Session(db) as s:
        s.add(ApiToken(name=name, token_hash=_token_hash(token), scope=scope_value, created_at=now,
                       expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None))
        s.commit()
    return token


def api_token_caller(db: sa.Engine, token: Optional[str]) -> Optional[TokenCaller]:
    """The live token's name and scope; None for an unknown, expired or revoked token. Notes
    the use (at most once a minute per token: a scrape every few seconds writes nothing)."""
    if not token:
        return None
    now = utcnow()
    with Session(db) as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_hash == _token_hash(token))).first()
        if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USE_GRANULARITY:
            s.execute(sa.update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
            s.commit()
        return TokenCaller(row.name, row.scope)


def revoke_api_token(db: sa.Engine, token_id: int) -> None:
    """The token stops working at once; its row stays, marked revoked."""
    with Session(db) as s:
        s.execute(sa.update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                  .values(revoked_at=utcnow()))
        s.commit()
