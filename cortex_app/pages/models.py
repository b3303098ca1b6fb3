"""Models page: every model, its state and health, live, with the row actions."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.confirm import confirmed
from cortex_app.components.fit import fit_offer
from cortex_app.components.images import follow_pulls, image_status
from cortex_app.components.layout import health_badge, page, state_badge
from cortex_app.states.images import pull_view
from cortex_app.states.models import ModelsState

TICK_MS = 500  # the table follows the database at this pace (goal: a change shows within 1 s)


def _actions(row: rx.Var) -> rx.Component:
    mid = row["id"]
    return rx.hstack(
        rx.cond(row["can_start"], rx.button("Start", size="1", on_click=ModelsState.start(mid), class_name="act-start")),
        rx.cond(row["can_stop"], rx.button("Stop", size="1", color_scheme="orange", variant="soft",
                                           on_click=ModelsState.stop(mid), class_name="act-stop")),
        rx.cond(row["stale"], rx.button("Apply", size="1", color_scheme="blue", variant="outline",
                                        on_click=ModelsState.apply(mid), class_name="act-apply")),
        rx.link(rx.button("Edit", size="1", variant="ghost", class_name="act-edit"), href=f"/models/{mid}/edit"),
        rx.cond(row["can_delete"], confirmed(
            "Delete", row["name"], "The configuration and its history go; model files stay on disk.",
            ModelsState.delete(mid), "act-delete", "confirm-delete")),
        spacing="2", wrap="wrap",
    )


def _usage(row: rx.Var) -> rx.Component:
    use = ModelsState.usage.get(row["id"].to(str), {})
    return rx.fragment(rx.text(use.get("figures", "").to(str), size="1", class_name="row-usage"),
                       rx.text(use.get("engine", "").to(str), size="1", color_scheme="gray",
                               class_name="row-engine-use"))


def _wide_cell(*children) -> rx.Component:
    """A cell only a wide screen shows (a phone keeps name, state and actions): assets/layout.css."""
    return rx.table.cell(*children, class_name="wide-only")


def _row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(rx.link(row["name"], href=f"/models/{row['id']}", weight="medium")),
        _wide_cell(rx.code(row["served_name"], size="1")),
        _wide_cell(row["engine"]),
        _wide_cell(rx.vstack(rx.text(row["devices"]), rx.text(row["host"], size="1", color_scheme="gray",
                                                             class_name="row-host"), spacing="0")),
        rx.table.cell(rx.vstack(state_badge(row["state"]),
                                rx.cond(row["state"] == "failed",  # why, inline (also the row's tooltip)
                                        rx.text(row["reason"], size="1", color_scheme="red", class_name="row-reason",
                                                max_width="320px")),
                                rx.cond(row["stale"], rx.text("config changed — Apply to restart", size="1",
                                                              color_scheme="blue")),
                                spacing="1")),
        _wide_cell(health_badge(row["health"])),
        _wide_cell(rx.cond(row["endpoint"] != "", rx.code(row["endpoint"], size="1"), rx.text("—"))),
        _wide_cell(rx.cond(row["uptime"] != "", row["uptime"], "—")),
        _wide_cell(_usage(row)),
        rx.table.cell(_actions(row)),
        id=f"model-row-{row['name']}",
        class_name="model-row",
        title=row["reason"],
    )


def _pull_offer() -> rx.Component:
    """Start on a model whose image the engine lacks: offer the pull, then Start (never both in one click)."""
    offer = ModelsState.pull_offer
    image = offer["image"].to(str)
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Pull the image first?"),
            rx.dialog.description(
                rx.text("The Docker Engine does not have ", rx.code(image), ", the image of ", offer["name"].to(str),
                        ". Pull it now; the model starts when you press Start after the pull.", size="2")),
            rx.box(image_status(image, False), padding_y="12px"),
            rx.hstack(
                rx.dialog.close(rx.button("Close", variant="soft", color_scheme="gray")),
                rx.cond(pull_view(image).get("state", "") == "done",
                        rx.button("Start ", offer["name"].to(str), id="offer-start",
                                  on_click=[ModelsState.pull_offer_open(False),
                                            ModelsState.start(offer["model_id"].to(int))])),
                spacing="3", justify="end"),
            id="pull-offer",
        ),
        open=ModelsState.offering_pull,
        on_open_change=ModelsState.pull_offer_open,
    )


def models() -> rx.Component:
    return page(
        "Models",
        rx.moment(interval=TICK_MS, on_change=ModelsState.tick, display="none"),
        follow_pulls(),
        _pull_offer(),
        fit_offer(),
        rx.hstack(
            rx.input(placeholder="Filter by name", value=ModelsState.query, on_change=ModelsState.set_query,
                     width=rx.breakpoints(initial="200px", sm="260px"), id="filter"),
            rx.select(["all", "running", "loading", "starting", "stopping", "stopped", "failed"],
                      value=ModelsState.state_filter, on_change=ModelsState.set_state_filter),
            spacing="3", wrap="wrap",
        ),
        rx.cond(ModelsState.engine_error != "",
                rx.callout(ModelsState.engine_error + " — states shown are the last known; nothing can start "
                           "or stop until it answers.", icon="triangle_alert", color_scheme="red", size="1",
                           id="engine-down")),
        rx.cond(ModelsState.message != "",
                rx.callout(ModelsState.message, icon="info", color_scheme="orange", size="1", id="models-message")),
        rx.cond(
            ~ModelsState.loaded,
            rx.hstack(rx.spinner(), rx.text("Loading models…")),
            rx.cond(
                ModelsState.rows.length() == 0,
                rx.callout("No models yet. Add one: pick an engine, a model file or repo, and Start it.",
                           icon="info", id="no-models"),
                rx.table.root(
                    rx.table.header(rx.table.row(*[
                        rx.table.column_header_cell(h, class_name=None if h in ("Name", "State", "") else
                                                    "wide-only")
                        for h in ("Name", "Served name", "Engine", "Device · host", "State", "Health", "Endpoint", "Uptime",
                                  "Resources", "")])),
                    rx.table.body(rx.foreach(ModelsState.visible, _row)),
                    width="100%", variant="surface", size="1",
                ),
            ),
        ),
        actions=rx.link(rx.button(rx.icon("plus", size=14), "Add model", id="add-model"), href="/models/new"),
    )
