"""Keys page: inference keys for the gateway (/v1): made (the key shown once, right then),
listed (never the key itself: its shown prefix), revoked."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Optional, Union

import reflex as rx

from cortex_app.gateway import keys as keymod
from cortex_app.models import InferenceKey, utcnow
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def key_row(k: InferenceKey, now: datetime) -> dict:
    """What the table shows of a key: plain strings and a live flag, decided here."""
    if k.revoked_at is not None:
        state, label = "revoked", f"revoked {_when(k.revoked_at)}"
    elif k.expires_at is not None and k.expires_at <= now:
        state, label = "expired", "expired"
    else:
        state, label = "live", "live"
    return {"id": k.id, "name": k.name, "prefix": keymod.shown_prefix(k),
            "models": "all" if k.models is None else ", ".join(k.models),
            "rpm": "none" if k.rpm_limit is None else f"{k.rpm_limit:,}", "created": _when(k.created_at),
            "expires": "never" if k.expires_at is None else _when(k.expires_at), "state": state, "label": label}


def rpm_of(raw: str) -> Optional[Union[int, str]]:
    """The form's requests-per-minute box as create_key takes it: empty is no limit; what is
    no whole number goes through as typed, for create_key to refuse with its own words."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return raw


class KeysState(AdminState):
    keys: list[dict] = []
    model_names: list[str] = []  # what a key may be limited to: served names and aliases
    name: str = ""
    all_models: bool = True
    picked: list[str] = []  # served names, when not all models
    expiry: str = "90"  # days; "0": never
    rpm: str = ""  # empty: no limit
    error: str = ""
    shown_key: str = ""  # once, right after it was made
    gateway_url: str = ""

    def _read(self) -> tuple[list[dict], list[str]]:
        db = services().db
        rows = keymod.list_keys(db)
        now = utcnow()
        return [key_row(k, now) for k in rows], keymod.public_names(db)

    async def _refresh(self):
        self.keys, self.model_names = await asyncio.to_thread(self._read)
        self.picked = [n for n in self.picked if n in self.model_names]

    @rx.event
    async def load(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        self.error = self.shown_key = ""
        self.gateway_url = services().settings.public_url + "/v1"
        await self._refresh()

    @rx.event
    def set_name(self, v: str):
        self.name = v

    @rx.event
    def set_all_models(self, v: bool):
        self.all_models = v

    @rx.event
    def set_model_allowed(self, served_name: str, on: bool):
        self.picked = sorted({*self.picked, served_name} if on else set(self.picked) - {served_name})

    @rx.event
    def set_expiry(self, v: str):
        self.expiry = v

    @rx.event
    def set_rpm(self, v: str):
        self.rpm = v

    @rx.event
    async def create_key(self):
        if await self._admin() is None:
            return rx.redirect("/login")
        svc = services()
        try:
            row, self.shown_key = await asyncio.to_thread(
                keymod.create_key, svc.db, self.name, None if self.all_models else list(self.picked),
                int(self.expiry) if self.expiry.isdigit() else -1, rpm_of(self.rpm))
        except keymod.KeyInvalid as exc:
            self.error, self.shown_key = f"key not made: {exc}", ""
            return
        await asyncio.to_thread(svc.gateway.refresh_keys)  # it works from the next request on
        self.error, self.name, self.rpm = "", "", ""
        await self._refresh()
        return rx.toast.success(f"key {row.name} made; copy it now")

    @rx.event
    async def revoke_key(self, key_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        svc = services()
        revoked = await asyncio.to_thread(keymod.revoke_key, svc.db, key_id)
        if revoked:
            await asyncio.to_thread(svc.gateway.refresh_keys)  # refused from the next request on
        await self._refresh()
        if not revoked:
            return rx.toast.error(f"no live key {key_id}: revoked already, or gone")
        return rx.toast.success("key revoked: the gateway refuses it from now on")
