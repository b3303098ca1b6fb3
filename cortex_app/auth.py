"""Admin accounts and sign-in sessions.

Passwords: argon2id (argon2-cffi). Sessions: a random 256-bit token in the browser's
cookie, its SHA-256 in the database with an expiry; sign-out deletes it. Wrong passwords
slow the account down: after 3 in a row, each further try must wait 2^(n-3) s (max 60 s).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, VerifyMismatchError
from sqlmodel import Session, select

from cortex_app.models import AdminSession, AdminUser, ApiToken, SetupCode, utcnow

SESSION_TTL = timedelta(hours=12)
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10
FREE_FAILURES = 3
MAX_LOCK_S = 60
_hasher = PasswordHasher()
# Verified when the user does not exist, so a wrong name costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("cortex-no-such-user")


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


def create_admin(db: sa.Engine, username: str, password: str, *, only_if_none: bool = True) -> AdminUser:
    """Create an admin. With only_if_none (first run), refuse once any admin exists."""
    errors = check_new_credentials(username, password)
    if errors:
        raise AuthError("; ".join(f"{k}: {v}" for k, v in errors.items()))
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
    errors = check_new_credentials(username, password)
    if errors:
        raise AuthError("; ".join(f"{k}: {v}" for k, v in errors.items()))
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


def sign_in(db: sa.Engine, username: str, password: str) -> str:
    """A new session token, or AuthError (wrong credentials, or wait `retry_after_s`)."""
    now = utcnow()
    with Session(db) as s:
        user = s.exec(select(AdminUser).where(AdminUser.username == username)).first()
        if user is not None and user.locked_until and user.locked_until > now:
            wait = int((user.locked_until - now).total_seconds()) + 1
            raise AuthError(f"too many wrong passwords; try again in {wait} s", retry_after_s=wait)
        try:
            _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
            ok = user is not None
        except (VerifyMismatchError, VerificationError):
            ok = False
        if not ok:
            if user is not None:
                # Atomic increment: parallel wrong guesses each count (none is lost to a race).
                s.execute(sa.update(AdminUser).where(AdminUser.id == user.id)
                          .values(failed_attempts=AdminUser.failed_attempts + 1))
                fails = s.exec(select(AdminUser.failed_attempts).where(AdminUser.id == user.id)).one()
                over = fails - FREE_FAILURES
                if over >= 0:
                    s.execute(sa.update(AdminUser).where(AdminUser.id == user.id).values(
                        locked_until=now + timedelta(seconds=min(2 ** over, MAX_LOCK_S))))
                s.commit()
            raise AuthError("wrong username or password")
        user.failed_attempts = 0
        user.locked_until = None
        user.last_login_at = now
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        token = secrets.token_urlsafe(32)
        s.add(AdminSession(token_hash=_token_hash(token), user_id=user.id, expires_at=now + SESSION_TTL))
        s.add(user)
        s.commit()
        return token


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

def create_api_token(db: sa.Engine, name: str) -> str:
    """A new token: returned once, stored only as its SHA-256."""
    name = (name or "").strip()[:64] or "token"
    token = "ctx_" + secrets.token_urlsafe(32)
    with Session(db) as s:
        s.add(ApiToken(name=name, token_hash=_token_hash(token)))
        s.commit()
    return token


def api_token_name(db: sa.Engine, token: Optional[str]) -> Optional[str]:
    if not token:
        return None
    with Session(db) as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_hash == _token_hash(token))).first()
        if row is None:
            return None
        row.last_used_at = utcnow()
        s.add(row)
        s.commit()
        return row.name


def revoke_api_token(db: sa.Engine, token_id: int) -> None:
    with Session(db) as s:
        s.execute(sa.delete(ApiToken).where(ApiToken.id == token_id))
        s.commit()
