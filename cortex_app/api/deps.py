"""Who is calling an admin HTTP route: the browser's session cookie, or nobody (401)."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, Request

from cortex_app import auth
from cortex_app.services import get as services

SESSION_COOKIE = "cortex_session"


async def require_admin(request: Request) -> str:
    token = request.cookies.get(SESSION_COOKIE) or ""
    user = await asyncio.to_thread(auth.session_user, services().db, token)
    if user is None:
        raise HTTPException(status_code=401, detail="sign in first", headers={"WWW-Authenticate": "Session"})
    return user
