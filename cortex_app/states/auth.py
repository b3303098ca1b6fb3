"""Sign-in, first-run setup, sign-out, and the check every protected page and action runs."""

from __future__ import annotations

import asyncio
from typing import Optional

import reflex as rx

from cortex_app import auth
from cortex_app.auth import SESSION_TTL
from cortex_app.services import get as services


class AuthState(rx.State):
    # The session token (random; the server keeps only its hash). Set by this state's events.
    token: str = rx.Cookie("", name="cortex_session", max_age=int(SESSION_TTL.total_seconds()),
                           same_site="strict", path="/")
    username: str = ""
    error: str = ""
    field_errors: dict[str, str] = {}
    busy: bool = False

    async def verified(self) -> Optional[str]:
        """The signed-in admin, checked against the database on every call."""
        user = await asyncio.to_thread(auth.session_user, services().db, self.token)
        self.username = user or ""
        return user

    @rx.event
    async def require_admin(self):
        """on_load of every protected page."""
        if await self.verified() is None:
            if not await asyncio.to_thread(auth.admin_exists, services().db):
                return rx.redirect("/setup")
            return rx.redirect("/login")

    @rx.event
    async def open_login(self):
        self.error = ""
        if not await asyncio.to_thread(auth.admin_exists, services().db):
            return rx.redirect("/setup")
        if await self.verified():
            return rx.redirect("/models")

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
            self.token = await auth.sign_in(services().db, form.get("username", "").strip(), form.get("password", ""),
                                            self.router.session.client_ip)
        except auth.AuthError as exc:
            self.error = str(exc)
            return
        finally:
            self.busy = False
        yield rx.redirect("/models")

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
            self.token = await auth.sign_in(services().db, username, password, self.router.session.client_ip)
        except auth.AuthError as exc:
            self.error = str(exc)
            return
        return rx.redirect("/models")

    @rx.event
    async def sign_out(self):
        await asyncio.to_thread(auth.sign_out, services().db, self.token)
        self.token = ""
        self.username = ""
        return rx.redirect("/login")


class AdminState(rx.State):
    """Base of every page state that reads or changes anything: its handlers call `admin()`
    first, because a websocket event can be sent without ever loading the page."""

    async def admin(self) -> Optional[str]:
        return await (await self.get_state(AuthState)).verified()
