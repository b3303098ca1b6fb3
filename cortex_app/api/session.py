"""Sign-in over HTTP, for scripts and for the console running headless in its container:
POST /api/session (username, password) -> the session token, also set as the cookie the
browser pages use; DELETE /api/session signs out. Same accounts and same slow-down on
wrong passwords as the sign-in page (auth.py)."""

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
    response = JSONResponse({"username": body.username, "token": token,
                             "expires_in_s": int(auth.SESSION_TTL.total_seconds())})
    response.set_cookie(SESSION_COOKIE, token, max_age=int(auth.SESSION_TTL.total_seconds()), samesite="strict",
                        path="/")
    return response


@router.delete("/api/session")
async def sign_out(request: Request) -> JSONResponse:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(SESSION_COOKIE)
    await asyncio.to_thread(auth.sign_out, services().db, token)
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
