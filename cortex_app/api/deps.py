"""Who is calling an admin HTTP route: a signed-in browser (session cookie), a script with an
API token (`Authorization: Bearer ctx_...`) or with a session token from POST /api/session
(as the cookie or the Bearer value); anyone else gets 401."""

from __future__ import annotations

import asyncio
from typing import Optional

from fastapi import HTTPException, Request

from cortex_app import auth
from cortex_app.services import get as services

SESSION_COOKIE = "cortex_session"


def _caller(request: Request, allow_cookie: bool) -> Optional[str]:
    db = services().db
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if bearer.startswith("ctx_"):
        name = auth.api_token_name(db, bearer)
        return f"token:{name}" if name else None
    # A session token (POST /api/session) as the Bearer value, or in the cookie.
    token = bearer or (request.cookies.get(SESSION_COOKIE) if allow_cookie else "")
    user = auth.session_user(db, token or "")
    return f"admin:{user}" if user else None


async def caller(request: Request, allow_cookie: bool = True) -> Optional[str]:
    """Who is calling ("admin:<user>", "token:<name>"), or None for nobody signed in."""
    return await asyncio.to_thread(_caller, request, allow_cookie)


async def _require(request: Request, allow_cookie: bool) -> str:
    who = await caller(request, allow_cookie)
    if who is None:
        raise HTTPException(status_code=401, detail="sign in, or send an API token as a Bearer token"
                            + ("" if allow_cookie else " (this route takes no cookie)"),
                            headers={"WWW-Authenticate": "Bearer"})
    return who


async def require_admin(request: Request) -> str:
    """Reads: the cookie will do."""
    return await _require(request, allow_cookie=True)


async def require_admin_bearer(request: Request) -> str:
    """Writes: only an Authorization header, which a browser never adds by itself, so another
    site (or another port of this host: 'same-site' to the cookie) cannot forge the request."""
    return await _require(request, allow_cookie=False)
