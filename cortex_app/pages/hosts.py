"""Hosts: the Docker Engines models run on. The console's own engine is host 1; others are
added with TLS client certificates or an ssh key, after a connection check."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.confirm import confirmed
from cortex_app.components.layout import page
from cortex_app.states.hosts import HostsState as H

STATE_COLORS = (("reachable", "green"), ("unreachable", "red"), "gray")
TICK_MS = 5000


def _secret(label: str, field: str, placeholder: str, id_: str) -> rx.Component:
    """A credential's box: sent with the form's submit, never kept in the page's state."""
    return rx.vstack(rx.text(label, size="2", weight="medium"),
                     rx.text_area(name=field, placeholder=placeholder, rows="3", id=id_, width="100%",
                                  font_family="monospace", size="1", auto_complete=False, spell_check=False),
                     spacing="1", width="100%")


def _form() -> rx.Component:
    return rx.card(rx.form(rx.vstack(
        rx.heading("Add a host", size="4"),
        rx.text("Another machine's Docker Engine, reached over TLS (dockerd --tlsverify, port 2376) or ssh (a user "
                "that may use its engine; the docker CLI must be there). The connection is checked before the host "
                "is saved. Keys and certificates are stored sealed and never shown again.",
                size="2", color_scheme="gray"),
        rx.segmented_control.root(rx.segmented_control.item("TLS", value="tls"),
                                  rx.segmented_control.item("ssh", value="ssh"),
                                  value=H.kind, on_change=H.set_kind, id="host-kind"),
        rx.hstack(
            rx.input(placeholder="name, e.g. gpu-2", name="name", id="host-name",
                     width=rx.breakpoints(initial="100%", md="180px")),
            rx.input(placeholder=rx.cond(H.kind == "tls", "tcp://10.0.0.12:2376", "ssh://cortex@10.0.0.12"),
                     name="endpoint", id="host-endpoint", width=rx.breakpoints(initial="100%", md="280px")),
            rx.input(placeholder="models' address (default: its host)", name="address", id="host-address",
                     width=rx.breakpoints(initial="100%", md="340px")),
            rx.input(placeholder="models dir there (default: the same path as here)", name="models_dir",
                     id="host-models-dir", width=rx.breakpoints(initial="100%", md="340px")),
            spacing="3", wrap="wrap", width="100%"),
        rx.cond(H.kind == "tls",
                rx.grid(_secret("CA certificate", "tls_ca", "-----BEGIN CERTIFICATE----- (ca.pem)", "host-tls-ca"),
                        _secret("Client certificate", "tls_cert", "-----BEGIN CERTIFICATE----- (cert.pem)",
                                "host-tls-cert"),
                        _secret("Client key", "tls_key", "-----BEGIN PRIVATE KEY----- (key.pem)", "host-tls-key"),
                        columns=rx.breakpoints(initial="1", md="3"), spacing="3", width="100%"),
                rx.grid(_secret("Private key", "ssh_key", "-----BEGIN OPENSSH PRIVATE KEY-----", "host-ssh-key"),
                        _secret("Host key", "ssh_host_key",
                                "ssh-ed25519 AAAA… as ssh-keyscan prints it; empty: the key the machine shows "
                                "is filled in for you to compare and confirm", "host-ssh-host-key"),
                        columns=rx.breakpoints(initial="1", md="2"), spacing="3", width="100%")),
        rx.button(rx.cond(H.adding, rx.spinner(size="1"), rx.icon("plug", size=14)),
                  rx.cond(H.adding, "Checking the connection…", "Add host"),
                  type="submit", disabled=H.adding, id="host-add"),
        rx.cond(H.error != "", rx.callout(H.error, icon="triangle_alert", color_scheme="red", size="1",
                                          id="host-error")),
        spacing="3", width="100%"), on_submit=H.add_host, reset_on_submit=False, width="100%"), width="100%")


def _host(h: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.text(h["name"], weight="medium"), class_name="host-name"),
        rx.table.cell(rx.vstack(rx.code(h["endpoint"], size="1"),
                                rx.text(h["credential"], size="1", color_scheme="gray"), spacing="1")),
        rx.table.cell(rx.vstack(rx.text(h["address"], size="1"),
                                rx.text(h["models_dir"], size="1", color_scheme="gray"), spacing="1")),
        rx.table.cell(rx.vstack(
            rx.badge(h["state"], color_scheme=rx.match(h["state"], *STATE_COLORS)),
            rx.cond(h["error"] != "", rx.text(h["error"], size="1", color_scheme="red", class_name="host-why")),
            spacing="1"), class_name="host-state"),
        rx.table.cell(rx.text(h["engine_version"], size="1"), class_name="host-version"),
        rx.table.cell(rx.text(h["gpus"], size="1", white_space="pre-line"), class_name="host-gpus"),
        rx.table.cell(rx.text(h["last_seen_at"], size="1")),
        rx.table.cell(rx.hstack(
            rx.button(rx.cond(H.checking == h["id"], rx.spinner(size="1"), rx.icon("refresh-cw", size=12)), "Check",
                      size="1", variant="soft", on_click=H.check_host(h["id"]), disabled=H.checking != 0,
                      class_name="host-check"),
            rx.cond(~h["local"], confirmed(
                "Remove", h["name"], "Cortex forgets this engine and its credentials; the engine itself and "
                "anything running on it are not touched.", H.remove_host(h["id"]), "host-remove",
                "host-remove-confirm")),
            spacing="2")),
        class_name="host-row",
    )


def _list() -> rx.Component:
    return rx.card(rx.vstack(
        rx.heading("Hosts", size="4"),
        rx.box(rx.table.root(
            rx.table.header(rx.table.row(*[rx.table.column_header_cell(n) for n in (
                "Name", "Engine", "Models at", "State", "Docker", "GPUs", "Last seen", "")])),
            rx.table.body(rx.foreach(H.hosts, _host)), size="1", width="100%", id="hosts"),
            width="100%", overflow_x="auto"),
        rx.text("Models run on the console's own engine (local) for now; the remote hosts' engines are checked "
                "every 10 s.", size="1", color_scheme="gray"),
        spacing="3", width="100%"), width="100%")


def hosts() -> rx.Component:
    return page("Hosts", _list(), _form(),
                rx.moment(interval=TICK_MS, on_change=H.tick, display="none"))
