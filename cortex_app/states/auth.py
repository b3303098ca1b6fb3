"""Sign-in, first-run setup, sign-out, and the check every protected page and action runs.

The session cookie is HttpOnly, so no script in the page can read it: it is set by an HTTP
route (api/session.py), and the server reads it from the websocket's handshake, which the
browser makes with its cookies. A sign-in here makes a session waiting to be handed over and
gives the page a one-time code (`_adopt`: the page posts it to /api/session/adopt, which sets
the cookie; the session token never passes through the page), then loads /models afresh, so
that the new websocket carries the new cookie."""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import reflex as rx
from starlette.requests import cookie_parser

from cortex_app import auth
from cortex_app.api.deps import SESSION_COOKIE
from cortex_app.services import get as services


def _adopt(code: str, then: str) -> rx.event.EventSpec:
    """The page posts the sign-in's one-time code to the route that sets the HttpOnly cookie,
    then loads `then` afresh (a new websocket, with the cookie)."""
    body = json.dumps({"code": code})
    return rx.call_script(
        f"fetch('/api/session/adopt', {{method: 'POST', credentials: 'same-origin', "
        f"headers: {{'Content-Type': 'application/json'}}, body: {json.dumps(body)}}})"
        f".then(r => window.location.assign(r.ok ? {json.dumps(then)} : '/login'))")


class AuthState(rx.State):
    username: str = ""
    error: str = ""
    field_errors: dict[str, str] = {}
    busy: bool = False

    def _session_token(self) -> str:
        """The session cookie the browser sent with this websocket's handshake."""
        # Starlette's parser, as the HTTP routes read cookies: a malformed cookie of another
        # app on this host (cookies are shared across ports) does not hide ours.
        return cookie_parser(self.router.headers.cookie or "").get(SESSION_COOKIE, "")

    async def _verified(self) -> Optional[str]:
        """The signed-in admin, checked against the database on every call."""
        user = await asyncio.to_thread(auth.session_user, services().db, self._session_token())
        self.username = user or ""
        return user

    @rx.event
    async def require_admin(self):
        """on_load of every protected page."""
        if await self._verified() is None:
            if not await asyncio.to_thread(auth.admin_exists, services().db):
                return rx.redirect("/setup")
            return rx.redirect("/login")

    @rx.event
    async def open_login(self):
        self.error = ""
        self.busy = False
        if not await asyncio.to_thread(auth.admin_exists, services().db):
            return rx.redirect("/setup")
        if await self._verified():
            return rx.redirect("/")

    @rx.event
    async def open_setup(self):
        self.error = ""
        self.field_errors = {}
        if await asyncio.to_thread(auth.admin_exists, services().db):
            return rx.redirect("/login")

    @rx.event
    async def sign_in(self, form: dict):
        self.busy = True
        self.error = ""
        yield
        try:
            code = await auth.sign_in(services().db, form.get("username", "").strip(), form.get("password", ""),
                                      self.router.session.client_ip, handoff=True)
        except auth.AuthError as exc:
            self.error = str(exc)
            self.busy = False
            return
        yield _adopt(code, "/")  # the Overview; busy until the page is replaced

    @rx.event
    async def create_first_admin(self, form: dict):
        self.error = ""
        username, password = form.get("username", "").strip(), form.get("password", "")
        self.field_errors = auth.check_new_credentials(username, password)
        if password != form.get("confirm", ""):
            self.field_errors["confirm"] = "the passwords differ"
        if self.field_errors:
            return
        try:
            await auth.run_hashing(auth.create_first_admin, services().db, username, password,
                                   form.get("setup_code", ""))
            code = await auth.sign_in(services().db, username, password, self.router.session.client_ip,
                                      handoff=True)
        except auth.AuthError as exc:
            self.error = str(exc)
            return
        return _adopt(code, "/")

    @rx.event
    async def sign_out(self):
        """The session ends here; the page then has its (now dead) cookie deleted and loads the
        sign-in page afresh."""
        await asyncio.to_thread(auth.sign_out, services().db, self._session_token())
        self.username = ""
        return rx.call_script("fetch('/api/session', {method: 'DELETE', credentials: 'same-origin'})"
                              ".finally(() => window.location.assign('/login'))")


class AdminState(rx.State):
    """Base of every page state that reads or changes anything: its handlers call `_admin()` (private: no client can call it as an event)
    first, because a websocket event can be sent without ever loading the page."""

    async def _admin(self) -> Optional[str]:
        return await (await self.get_state(AuthState))._verified()
