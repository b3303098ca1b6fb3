"""Sign-in over HTTP, for scripts and for the console running headless in its container:
POST /api/session (username, password) -> the session token, also set as the cookie the
browser pages use; DELETE /api/session signs out. Same accounts and same slow-down on
wrong passwords as the sign-in page (auth.py).

The cookie is set only here, HttpOnly (no script in a page can read it), SameSite=Strict, and
Secure when the console is served over https (CORTEX_PUBLIC_URL). The sign-in page signs in
over its websocket and gets a one-time code, which it posts to POST /api/session/adopt: that
route gives the session its token and sets it as the cookie (only for the console's own pages,
by their Origin; a code works once, for a minute)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cortex_app import auth
from cortex_app.api.deps import SESSION_COOKIE
from cortex_app.services import get as services

router = APIRouter()


class Credentials(BaseModel):
    username: str
    password: str


class Adopt(BaseModel):
    code: str


def cookie_options(public_url: str) -> dict:
    """How the session cookie is set: Secure only where the console is served over https (a
    browser drops a Secure cookie set over plain http, except on localhost)."""
    return {"max_age": int(auth.SESSION_TTL.total_seconds()), "path": "/", "samesite": "strict",
            "httponly": True, "secure": public_url.startswith("https://")}


def _with_cookie(response: JSONResponse, token: str) -> JSONResponse:
    response.set_cookie(SESSION_COOKIE, token, **cookie_options(services().settings.public_url))
    return response


@router.post("/api/session")
async def sign_in(body: Credentials, request: Request) -> JSONResponse:
    address = request.client.host if request.client else ""
    try:
        token = await auth.sign_in(services().db, body.username, body.password, address)
    except auth.AuthError as exc:
        if exc.retry_after_s:
            return JSONResponse({"detail": str(exc)}, status_code=429,
                                headers={"Retry-After": str(exc.retry_after_s)})
        return JSONResponse({"detail": str(exc)}, status_code=401)
    return _with_cookie(JSONResponse({"username": body.username, "token": token,
                                      "expires_in_s": int(auth.SESSION_TTL.total_seconds())}), token)


@router.post("/api/session/adopt")
async def adopt(body: Adopt, request: Request) -> JSONResponse:
    """The sign-in page's second step: its one-time code becomes the session's HttpOnly cookie."""
    if request.headers.get("origin", "") not in services().settings.allowed_origins:
        return JSONResponse({"detail": "only the console's own pages may do this"}, status_code=403)
    token = await asyncio.to_thread(auth.adopt, services().db, body.code)
    if token is None:
        return JSONResponse({"detail": "no such sign-in (used, or more than a minute old)"}, status_code=401)
    return _with_cookie(JSONResponse({"signed_in": True}), token)


@router.delete("/api/session")
async def sign_out(request: Request) -> JSONResponse:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(SESSION_COOKIE)
    await asyncio.to_thread(auth.sign_out, services().db, token)
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict", httponly=True)
    return response
