"""Settings: webhook endpoints with their delivery log, and API tokens."""

from __future__ import annotations

import reflex as rx

from cortex_app.auth import TOKEN_EXPIRY_DAYS
from cortex_app.components.layout import page
from cortex_app.components.prose import prose
from cortex_app.models import TokenScope
from cortex_app.states.settings import SettingsState as St
from cortex_app.webhooks import EVENT_TYPES

SCOPES = [s.value for s in TokenScope]


def _once(value, what: str, id_: str) -> rx.Component:
    return rx.cond(value != "", rx.callout(
        rx.vstack(rx.text(f"The {what} — copy it now; it is not shown again:", size="2"),
                  rx.hstack(rx.code(value, id=id_, size="2"),
                            rx.button(rx.icon("copy", size=14), "Copy", size="1", variant="soft",
                                      on_click=rx.set_clipboard(value), id=f"copy-{id_}"),
                            align="center", wrap="wrap")),
        icon="key-round", color_scheme="green"))


def _endpoint(ep: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.code(ep["url"], size="1")),
        rx.table.cell(rx.text(ep["events"], size="1")),
        rx.table.cell(rx.text(ep["models"], size="1"), class_name="endpoint-models"),
        rx.table.cell(ep["format"]),
        rx.table.cell(rx.switch(checked=ep["enabled"].to(bool), on_change=lambda _: St.toggle_enabled(ep["id"]))),
        rx.table.cell(rx.text(ep["counts"], size="1")),
        rx.table.cell(rx.hstack(
            rx.button("Send test", size="1", variant="soft", on_click=St.ping(ep["id"]), class_name="ping"),
            rx.button("Rotate secret", size="1", variant="ghost", on_click=St.rotate(ep["id"])),
            rx.button("Delete", size="1", variant="ghost", color_scheme="red", on_click=St.remove(ep["id"])),
            spacing="2", wrap="wrap"), min_width="150px"),
    )


DELIVERY_COLUMNS = ("Created", "Event", "Model", "Endpoint", "Webhook id", "Status", "Attempts", "Next attempt",
                    "Last result", "")


def _delivery(d: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(d["at"], size="1")), rx.table.cell(rx.code(d["event"], size="1")),
        rx.table.cell(rx.text(d["model"], size="1")),
        rx.table.cell(rx.text(d["endpoint"], size="1"), title=d["url"]),
        rx.table.cell(rx.code(d["message_id"], size="1")),
        rx.table.cell(rx.badge(d["status"], color_scheme=rx.match(d["status"], ("delivered", "green"),
                                                                   ("failed", "red"), "orange"))),
        rx.table.cell(d["attempts"]), rx.table.cell(rx.text(d["next"], size="1"), class_name="delivery-next"),
        rx.table.cell(rx.text(d["result"], " ", d["latency"], size="1")),
        rx.table.cell(rx.button("Redeliver", size="1", variant="ghost", on_click=St.redeliver(d["id"]),
                                class_name="redeliver")),
        class_name="delivery-row",
    )


def _head(*names: str) -> rx.Component:
    return rx.table.header(rx.table.row(*[rx.table.column_header_cell(n) for n in names]))


def _scroll(table: rx.Component) -> rx.Component:
    """A wide table scrolls inside its card on a narrow screen; the page never does."""
    return rx.box(table, width="100%", overflow_x="auto")


def _token(t: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(t["name"]), rx.table.cell(rx.badge(t["scope"])),
        rx.table.cell(rx.text(t["created"], size="1")), rx.table.cell(rx.text(t["expires"], size="1")),
        rx.table.cell(rx.text(t["used"], size="1"), class_name="token-used"),
        rx.table.cell(rx.cond(t["live"].to(bool), rx.button("Revoke", size="1", variant="ghost", color_scheme="red",
                                                            on_click=St.revoke_token(t["id"])))),
        class_name="token-row",
    )


def settings() -> rx.Component:
    return page(
        "Settings",
        rx.moment(interval=2000, on_change=St.tick, display="none"),
        rx.card(rx.vstack(
            rx.heading("Webhooks", size="4"),
            rx.text("Signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).", size="2",
                    color_scheme="gray"),
            rx.hstack(rx.input(placeholder="https://receiver.example/hook", value=St.new_url,
                               on_change=St.set_new_url, width=rx.breakpoints(initial="100%", md="420px"),
                               id="webhook-url"),
                      rx.input(placeholder="models: names, comma-separated (empty: every model)",
                               value=St.new_models, on_change=St.set_new_models,
                               width=rx.breakpoints(initial="100%", md="300px"), id="webhook-models"),
                      rx.select(["standard", "slack"], value=St.new_format, on_change=St.set_new_format),
                      rx.button("Add endpoint", on_click=St.add_endpoint, id="add-endpoint"), spacing="3",
                      wrap="wrap"),
            rx.flex(*[rx.checkbox(e, checked=St.new_events[e], on_change=lambda v, e=e: St.toggle_event(e, v),
                                  size="1") for e in EVENT_TYPES], wrap="wrap", spacing="3"),
            rx.cond(St.error != "", rx.callout(St.error, icon="triangle_alert", color_scheme="red", size="1",
                                               id="settings-error")),
            _once(St.shown_secret, "endpoint's signing secret", "shown-secret"),
            rx.cond(St.ping_result != "", rx.text(St.ping_result, size="2", id="ping-result")),
            rx.cond(St.endpoints.length() > 0, _scroll(rx.table.root(
                _head("URL", "Events", "Models", "Format", "On", "Deliveries", ""),
                rx.table.body(rx.foreach(St.endpoints, _endpoint)), size="1", width="100%", id="endpoints"))),
            rx.text("Delivery log (newest first)", weight="bold", size="2"),
            rx.cond(St.deliveries.length() > 0,
                    _scroll(rx.table.root(_head(*DELIVERY_COLUMNS),
                                          rx.table.body(rx.foreach(St.deliveries, _delivery)), size="1",
                                          width="100%", id="delivery-log")),
                    rx.text("No deliveries yet.", size="2", color_scheme="gray")),
            spacing="3", width="100%"), width="100%"),
        rx.card(rx.vstack(
            rx.heading("API tokens", size="4"),
            prose("For scripts and monitoring, sent as `Authorization: Bearer <token>`. The scope says what "
                    "a token may do: read (GET /api/models, /metrics), operate (also start, stop, apply), admin "
                    "(also create, edit, delete). Stored hashed.", size="2", color_scheme="gray"),
            rx.hstack(rx.input(placeholder="name, e.g. prometheus", value=St.token_name,
                               on_change=St.set_token_name, id="token-name"),
                      rx.select.root(rx.select.trigger(id="token-scope"), rx.select.content(
                          *[rx.select.item(s, value=s) for s in SCOPES]),
                          value=St.token_scope, on_change=St.set_token_scope),
                      rx.select.root(rx.select.trigger(id="token-expiry"), rx.select.content(
                          *[rx.select.item(f"expires in {d} days" if d else "never expires", value=str(d))
                            for d in TOKEN_EXPIRY_DAYS]),
                          value=St.token_expiry, on_change=St.set_token_expiry),
                      rx.button("Create token", on_click=St.create_token, id="create-token"), spacing="3",
                      wrap="wrap"),
            rx.cond(St.token_error != "", rx.callout(St.token_error, icon="triangle_alert", color_scheme="red",
                                                     size="1", id="token-error")),
            _once(St.shown_token, "API token", "shown-token"),
            _scroll(rx.table.root(_head("Name", "Scope", "Created", "Expiry", "Last used", ""),
                                  rx.table.body(rx.foreach(St.tokens, _token)), size="1", width="100%")),
            spacing="3", width="100%"), width="100%"),
    )
