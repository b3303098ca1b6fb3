"""System: the Docker Engine, engine images, database, scheduler jobs, the console's journal."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.images import follow_pulls, image_status
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
        rx.text("Images models use or default to. Pull fetches a missing one from its registry with the "
                "engine's credentials; it goes on if you leave the page.", size="1", color_scheme="gray"),
        rx.table.root(
            _cell_head("Image", "On the engine", "Used by"),
            rx.table.body(rx.foreach(SystemState.images, lambda i: rx.table.row(
                rx.table.cell(rx.code(i["image"], size="1")),
                rx.table.cell(image_status(i["image"], i["present"].to(bool))),
                rx.table.cell(i["models"]),
                class_name="image-row"))),
            size="1", width="100%"),
        width="100%"), width="100%")


def _cell_head(*names: str) -> rx.Component:
    return rx.table.header(rx.table.row(*[rx.table.column_header_cell(n) for n in names]))


def _jobs() -> rx.Component:
    return rx.card(rx.vstack(
        rx.text("Background jobs", weight="bold"),
        rx.text("Each job's state and its last error; a failure is logged when it begins, not on every run.",
                size="1", color_scheme="gray"),
        rx.table.root(
            _cell_head("Job", "Status", "Last error", "When", "Failure episodes"),
            rx.table.body(rx.foreach(SystemState.jobs, lambda j: rx.table.row(
                rx.table.cell(rx.code(j["job"], size="1")),
                rx.table.cell(rx.badge(j["status"], color_scheme=rx.cond(j["failing"], "red", "green")),
                              class_name="job-status"),
                rx.table.cell(rx.text(j["last_error"], size="1"), class_name="job-error"),
                rx.table.cell(rx.text(j["last_error_at"], size="1")),
                rx.table.cell(j["episodes"]),
                id=j["id"]))),
            size="1", width="100%"),
        width="100%"), width="100%")


def _journal() -> rx.Component:
    return rx.card(rx.vstack(
        rx.text("Console journal", weight="bold"),
        rx.text("What the console did or found outside any model's history: containers removed or left "
                "alone, jobs that began failing or recovered.", size="1", color_scheme="gray"),
        rx.cond(
            SystemState.events,
            rx.table.root(
                _cell_head("When", "What", "Subject", "Why"),
                rx.table.body(rx.foreach(SystemState.events, lambda e: rx.table.row(
                    rx.table.cell(rx.text(e["at"], size="1")),
                    rx.table.cell(rx.code(e["kind"], size="1")),
                    rx.table.cell(rx.text(e["subject"], size="1")),
                    rx.table.cell(rx.text(e["message"], size="1"))))),
                size="1", width="100%", id="journal"),
            rx.text("Nothing yet.", size="2", color_scheme="gray")),
        width="100%"), width="100%")


def system() -> rx.Component:
    return page(
        "System",
        follow_pulls(),
        _engine_card(),
        rx.grid(
            _fact("database", "Database", SystemState.db_kind),
            _fact("info", "Console version", SystemState.version),
            _fact("crown", "Reconciler leader", SystemState.leader),
            _fact("refresh-ccw", "Last reconcile pass", SystemState.last_pass),
            _fact("network", "Model wiring", SystemState.wiring, id="model-wiring"),
            columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%",
        ),
        _jobs(),
        _images(),
        _journal(),
    )
