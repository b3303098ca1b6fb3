"""System: the Docker Engine, engine images, database, scheduler, version."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.layout import page
from cortex_app.states.system import SystemState


def _engine_card() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(rx.icon("container", size=18), rx.text("Docker Engine", weight="bold"), spacing="2"),
            rx.cond(
                ~SystemState.checked,
                rx.hstack(rx.spinner(size="2"), rx.text("Checking the Docker Engine…", size="2")),
                rx.cond(
                    SystemState.engine_reachable,
                    rx.vstack(
                        rx.badge("reachable", color_scheme="green", id="engine-status"),
                        rx.text("Docker ", SystemState.engine_version, " at ", rx.code(SystemState.engine_host),
                                size="2"),
                        spacing="1",
                    ),
                    rx.vstack(
                        rx.badge("unreachable", color_scheme="red", id="engine-status"),
                        rx.callout(SystemState.engine_error, icon="triangle_alert", color_scheme="red", size="1",
                                   id="engine-error"),
                        rx.text("Models cannot be started or stopped until the engine answers. "
                                "The console keeps working and checks again when you refresh.", size="2"),
                        spacing="2",
                    ),
                ),
            ),
            rx.button(rx.icon("refresh-cw", size=14), "Check again", size="1", variant="soft",
                      on_click=SystemState.refresh),
            spacing="2",
            align="start",
        ),
        width="100%",
    )


def _fact(icon: str, label: str, value, id: str = "") -> rx.Component:
    return rx.card(rx.vstack(rx.hstack(rx.icon(icon, size=18), rx.text(label, weight="bold"), spacing="2"),
                             rx.text(value, size="2", id=id or None), spacing="2"), width="100%")


def _images() -> rx.Component:
    return rx.card(rx.vstack(
        rx.text("Engine images", weight="bold"),
        rx.table.root(
            rx.table.header(rx.table.row(rx.table.column_header_cell("Image"), rx.table.column_header_cell("Here"),
                                         rx.table.column_header_cell("Used by"))),
            rx.table.body(rx.foreach(SystemState.images, lambda i: rx.table.row(
                rx.table.cell(rx.code(i["image"], size="1")),
                rx.table.cell(rx.badge(i["present"], color_scheme=rx.cond(i["present"] == "present", "green",
                                                                          "orange"))),
                rx.table.cell(i["models"])))),
            size="1", width="100%"),
        width="100%"), width="100%")


def system() -> rx.Component:
    return page(
        "System",
        _engine_card(),
        rx.grid(
            _fact("database", "Database", SystemState.db_kind),
            _fact("info", "Console version", SystemState.version),
            _fact("crown", "Reconciler leader", SystemState.leader),
            _fact("refresh-ccw", "Last reconcile pass", SystemState.last_pass),
            _fact("network", "Model wiring", SystemState.wiring, id="model-wiring"),
            columns="2", spacing="4", width="100%",
        ),
        _images(),
    )
