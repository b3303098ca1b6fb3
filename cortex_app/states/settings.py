"""Settings page: webhook endpoints (secret shown once, rotate, enable, test, delivery log
with Redeliver) and API tokens (shown once)."""

from __future__ import annotations

import asyncio

import reflex as rx
from sqlmodel import Session, func, select

from cortex_app import auth, webhooks
from cortex_app.models import ApiToken, Model, WebhookDelivery, WebhookEndpoint, utcnow
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState


def _when(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def _token_expiry(t: ApiToken, now) -> str:
    if t.revoked_at is not None:
        return f"revoked {_when(t.revoked_at)}"
    if t.expires_at is None:
        return "never expires"
    return ("expired " if t.expires_at <= now else "expires ") + _when(t.expires_at)


def delivery_row(d: WebhookDelivery, url: str, names: dict[int, str]) -> dict:
    """One line of the delivery log: what, about which model, to where, how it went, and
    when the next attempt is due while it is still pending."""
    model = "" if d.model_id is None else names.get(d.model_id, f"#{d.model_id} (deleted)")
    return {"id": d.id, "url": url, "endpoint": f"#{d.endpoint_id}", "event": d.event_type, "model": model or "—",
            "message_id": d.message_id, "status": d.status, "attempts": str(d.attempts),
            "next": d.next_attempt_at.strftime("%H:%M:%S") if d.status == "pending" else "—",
            "result": (f"HTTP {d.last_status_code}" if d.last_status_code else (d.last_error or "—")),
            "latency": f"{d.last_latency_ms:.0f} ms" if d.last_latency_ms is not None else "",
            "at": d.created_at.strftime("%H:%M:%S")}


class SettingsState(AdminState):
    endpoints: list[dict] = []
    deliveries: list[dict] = []
    tokens: list[dict] = []
    new_url: str = ""
    new_events: dict[str, bool] = {e: e not in ("console.started",) for e in webhooks.EVENT_TYPES}
    new_format: str = "standard"
    new_models: str = ""  # model names, comma-separated; empty: every model
    error: str = ""
    shown_secret: str = ""  # once, right after it was made
    shown_token: str = ""
    ping_result: str = ""
    token_name: str = ""
    token_error: str = ""
    token_scope: str = "read"
    token_expiry: str = "90"  # days; "0": never

    def _read(self):
        db = services().db
        with Session(db) as s:
            eps = s.exec(select(WebhookEndpoint).order_by(WebhookEndpoint.id)).all()
            counts = s.exec(select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
                            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)).all()
            recent = s.exec(select(WebhookDelivery, WebhookEndpoint.url)
                            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                            .order_by(WebhookDelivery.id.desc()).limit(50)).all()
            tokens = s.exec(select(ApiToken).order_by(ApiToken.id)).all()
            names = dict(s.exec(select(Model.id, Model.name)).all())
        per = {}
        for ep_id, status, n in counts:
            per.setdefault(ep_id, {})[status] = n
        endpoints = [{"id": e.id, "url": e.url, "events": ", ".join(e.event_types), "format": e.payload_format,
                      "models": "every model" if e.model_ids is None else
                      ", ".join(names.get(i, f"#{i} (deleted)") for i in e.model_ids),
                      "enabled": e.enabled, "counts": " · ".join(f"{k} {v}" for k, v in sorted(per.get(e.id, {}).items()))
                      or "no deliveries yet"} for e in eps]
        deliveries = [delivery_row(d, url, names) for d, url in recent]
        now = utcnow()
        toks = [{"id": t.id, "name": t.name, "scope": t.scope.value, "created": _when(t.created_at),
                 "expires": _token_expiry(t, now), "used": _when(t.last_used_at) if t.last_used_at else "never",
                 "live": t.revoked_at is None and (t.expires_at is None or t.expires_at > now)} for t in tokens]
        return endpoints, deliveries, toks

    async def _refresh(self):
        self.endpoints, self.deliveries, self.tokens = await asyncio.to_thread(self._read)

    @rx.event
    async def load(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        self.error = self.token_error = self.shown_secret = self.shown_token = self.ping_result = ""
        await self._refresh()

    @rx.event
    async def tick(self, _=None):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        await self._refresh()

    @rx.event
    def set_new_url(self, v: str):
        self.new_url = v

    @rx.event
    def set_new_format(self, v: str):
        self.new_format = v

    @rx.event
    def set_new_models(self, v: str):
        self.new_models = v

    @rx.event
    def set_token_name(self, v: str):
        self.token_name = v

    @rx.event
    def set_token_scope(self, v: str):
        self.token_scope = v

    @rx.event
    def set_token_expiry(self, v: str):
        self.token_expiry = v

    @rx.event
    def toggle_event(self, name: str, on: bool):
        self.new_events[name] = on

    @rx.event
    async def add_endpoint(self):
        if await self._admin() is None:
            return rx.redirect("/login")
        db = services().db
        try:
            model_ids = await asyncio.to_thread(webhooks.model_ids_named, db, self.new_models)
            ep = await asyncio.to_thread(webhooks.create_endpoint, db, url=self.new_url,
                                         event_types=[e for e, on in self.new_events.items() if on],
                                         payload_format=self.new_format, model_ids=model_ids)
        except webhooks.EndpointInvalid as exc:
            self.error = str(exc)
            return
        self.error, self.new_url, self.new_models, self.shown_secret = "", "", "", ep.secret
        await self._refresh()
        return rx.toast.success(f"endpoint {ep.url} added; copy its secret now")

    @rx.event
    async def rotate(self, endpoint_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        self.shown_secret = await asyncio.to_thread(webhooks.rotate_secret, services().db, endpoint_id)
        return rx.toast.success("a new signing secret is in use; copy it now")

    @rx.event
    async def toggle_enabled(self, endpoint_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        await asyncio.to_thread(webhooks.toggle_endpoint, services().db, endpoint_id)
        await self._refresh()
        ep = next((e for e in self.endpoints if e["id"] == endpoint_id), None)
        if ep is not None:
            return rx.toast.info(f"{ep['url']}: {'enabled' if ep['enabled'] else 'disabled'}")

    @rx.event
    async def remove(self, endpoint_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        await asyncio.to_thread(webhooks.delete_endpoint, services().db, endpoint_id)
        await self._refresh()
        return rx.toast.success("endpoint deleted, with its delivery log")

    @rx.event
    async def ping(self, endpoint_id: int):
        if await self._admin() is None:
            yield rx.redirect("/login")
            return
        ep = await asyncio.to_thread(webhooks.get_endpoint, services().db, endpoint_id)
        if ep is None:
            return
        self.ping_result = f"Sending a test to {ep.url}…"
        yield
        out = await webhooks.send_ping(services().db, ep)
        self.ping_result = (f"Test to {ep.url}: " + (f"delivered (HTTP {out.status_code}, {out.latency_ms:.0f} ms)"
                                                      if out.ok else f"failed — {out.error}"))
        await self._refresh()  # the test is in the delivery log
        yield (rx.toast.success if out.ok else rx.toast.error)(self.ping_result)

    @rx.event
    async def redeliver(self, delivery_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        found = await asyncio.to_thread(webhooks.redeliver, services().db, delivery_id)
        await self._refresh()
        if not found:
            return rx.toast.error(f"delivery {delivery_id} is gone (its endpoint was deleted)")
        return rx.toast.success(f"delivery {delivery_id} queued again: it is sent within a second")

    @rx.event
    async def create_token(self):
        if await self._admin() is None:
            return rx.redirect("/login")
        try:
            self.shown_token = await asyncio.to_thread(auth.create_api_token, services().db, self.token_name,
                                                       self.token_scope, int(self.token_expiry or 0))
        except (auth.AuthError, ValueError) as exc:
            self.token_error = f"token not made: {exc}"
            return
        self.token_error, self.token_name = "", ""
        await self._refresh()
        return rx.toast.success("token made; copy it now")

    @rx.event
    async def revoke_token(self, token_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        await asyncio.to_thread(auth.revoke_api_token, services().db, token_id)
        await self._refresh()
        return rx.toast.success("token revoked: it is refused from now on")
