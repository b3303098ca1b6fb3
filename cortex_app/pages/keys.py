"""Keys: inference keys for the OpenAI-compatible gateway (/v1): make one, copy it once, revoke."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.confirm import confirmed
from cortex_app.components.layout import page
from cortex_app.gateway.keys import EXPIRY_DAYS
from cortex_app.states.keys import KeysState as K

STATE_COLORS = (("live", "green"), ("revoked", "red"), "gray")


def _shown_once() -> rx.Component:
    return rx.cond(K.shown_key != "", rx.callout(
        rx.vstack(rx.text("The key — copy it now; it is not shown again:", size="2"),
                  rx.hstack(rx.code(K.shown_key, id="key-secret", size="2"),
                            rx.button(rx.icon("copy", size=14), "Copy", size="1", variant="soft",
                                      on_click=rx.set_clipboard(K.shown_key), id="copy-key-secret"),
                            align="center", wrap="wrap")),
        icon="key-round", color_scheme="green"))


def _models_picker() -> rx.Component:
    return rx.vstack(
        rx.checkbox("All models", checked=K.all_models, on_change=K.set_all_models, size="2", id="key-all-models"),
        rx.cond(~K.all_models, rx.cond(
            K.model_names.length() > 0,
            rx.flex(rx.foreach(K.model_names, lambda n: rx.checkbox(
                n, checked=K.picked.contains(n), on_change=lambda v: K.set_model_allowed(n, v), size="2",
                class_name="key-model")), wrap="wrap", spacing="3"),
            rx.text("No models yet: add one on the Models page first.", size="2", color_scheme="gray"))),
        spacing="2")


def _form() -> rx.Component:
    return rx.card(rx.vstack(
        rx.heading("New key", size="4"),
        rx.text("A client sends it as ", rx.code("Authorization: Bearer <key>", size="2"),
                " to the gateway, an OpenAI-compatible API at ",
                rx.code(K.gateway_url, size="2", id="keys-gateway-url"),
                ". Only its hash is stored: the key is shown once.", size="2", color_scheme="gray"),
        rx.hstack(rx.input(placeholder="name, e.g. chat-frontend", value=K.name, on_change=K.set_name,
                           id="key-name", width=rx.breakpoints(initial="100%", md="220px")),
                  rx.select.root(rx.select.trigger(id="key-expiry"), rx.select.content(
                      *[rx.select.item(f"expires in {d} days" if d else "never expires", value=str(d))
                        for d in EXPIRY_DAYS]),
                      value=K.expiry, on_change=K.set_expiry),
                  rx.input(placeholder="requests/min (empty: no limit)", value=K.rpm, on_change=K.set_rpm,
                           type="number", min=1, id="key-rpm", width=rx.breakpoints(initial="100%", md="250px")),
                  spacing="3", wrap="wrap"),
        _models_picker(),
        rx.button("Create key", on_click=K.create_key, id="key-create"),
        rx.cond(K.error != "", rx.callout(K.error, icon="triangle_alert", color_scheme="red", size="1",
                                          id="key-error")),
        _shown_once(),
        spacing="3", width="100%"), width="100%")


def _revoke(k: rx.Var) -> rx.Component:
    return confirmed("Revoke", k["name"], "Requests with it are refused from now on; its usage stays on record.",
                     K.revoke_key(k["id"]), "key-revoke", "key-revoke-confirm")


def _key(k: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(k["name"]), rx.table.cell(rx.code(k["prefix"], size="1")),
        rx.table.cell(rx.text(k["models"], size="1"), class_name="key-models"),
        rx.table.cell(rx.text(k["rpm"], size="1")),
        rx.table.cell(rx.text(k["created"], size="1")), rx.table.cell(rx.text(k["expires"], size="1")),
        rx.table.cell(rx.badge(k["label"], color_scheme=rx.match(k["state"], *STATE_COLORS)),
                      class_name="key-state"),
        rx.table.cell(rx.cond(k["state"] == "live", _revoke(k))),
        class_name="key-row",
    )


def _list() -> rx.Component:
    return rx.card(rx.vstack(
        rx.heading("Keys", size="4"),
        rx.cond(K.keys.length() > 0, rx.box(rx.table.root(
            rx.table.header(rx.table.row(*[rx.table.column_header_cell(n) for n in (
                "Name", "Key", "Models", "Requests/min", "Created", "Expires", "State", "")])),
            rx.table.body(rx.foreach(K.keys, _key)), size="1", width="100%", id="keys"),
            width="100%", overflow_x="auto"),
            rx.text("No keys yet.", size="2", color_scheme="gray")),
        spacing="3", width="100%"), width="100%")


def keys() -> rx.Component:
    return page("Keys", _form(), _list())
