"""Who is calling an admin HTTP route, and may they: a signed-in browser (session cookie), a
script with an API token (`Authorization: Bearer ctx_...`, its scope says what it may do) or
with a session token from POST /api/session (as the cookie or the Bearer value: an admin's
session may do everything). Nobody signed in: 401; a token whose scope is too small: 403."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Optional

from fastapi import HTTPException, Request

from cortex_app import auth
from cortex_app.models import TokenScope
from cortex_app.services import get as services

SESSION_COOKIE = "cortex_session"


@dataclass(frozen=True)
class Caller:
    who: str  # "admin:<user>" or "token:<name>" (the actor of what it does)
    scope: TokenScope


def _caller(request: Request, allow_cookie: bool) -> Optional[Caller]:
    db = services().db
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if bearer.startswith("ctx_"):
        token = auth.api_token_caller(db, bearer)
        return Caller(f"token:{token.name}", token.scope) if token else None
    # A session token (POST /api/session) as the Bearer value, or in the cookie.
    session = bearer or (request.cookies.get(SESSION_COOKIE) if allow_cookie else "")
    user = auth.session_user(db, session or "")
    return Caller(f"admin:{user}", TokenScope.ADMIN) if user else None


async def caller(request: Request, allow_cookie: bool = True) -> Optional[Caller]:
    """Who is calling, or None for nobody signed in (or an unknown, expired or revoked token)."""
    return await asyncio.to_thread(_caller, request, allow_cookie)


async def _require(request: Request, scope: TokenScope, allow_cookie: bool) -> str:
    return (await _require_caller(request, scope, allow_cookie)).who


async def _require_caller(request: Request, scope: TokenScope, allow_cookie: bool) -> Caller:
    who = await caller(request, allow_cookie)
    if who is None:
        raise HTTPException(status_code=401, detail="sign in, or send a live API token as a Bearer token"
                            + ("" if allow_cookie else " (this route takes no cookie)"),
                            headers={"WWW-Authenticate": "Bearer"})
    if not who.scope.allows(scope):
        raise HTTPException(status_code=403, detail=f"this token's scope is {who.scope.value}; this route "
                            f"needs {scope.value} (an admin makes such a token on the Settings page)")
    return who


async def require_read(request: Request) -> str:
    """Reads: the cookie will do."""
    return await _require(request, TokenScope.READ, allow_cookie=True)


async def read_caller(request: Request) -> Caller:
    """Reads, where what is shown depends on the caller: a read token (a dashboard) sees no
    address where an engine listens (sees_engines)."""
    return await _require_caller(request, TokenScope.READ, allow_cookie=True)


def sees_engines(who: Caller) -> bool:
    """Whether the caller may see where engines listen: operate and admin do, read does not
    (whoever reaches an engine's port skips the gateway's keys)."""
    return who.scope.allows(TokenScope.OPERATE)


async def require_operate(request: Request) -> str:
    """Start, stop, apply. Writes take only an Authorization header, which a browser never adds
    by itself, so another site (or another port of this host: 'same-site' to the cookie)
    cannot forge the request."""
    return await _require(request, TokenScope.OPERATE, allow_cookie=False)


async def require_admin(request: Request) -> str:
    """Create, edit, delete: an admin's session or an admin token, in the header."""
    return await _require(request, TokenScope.ADMIN, allow_cookie=False)
