"""Model detail: state, health history, endpoint, how to call it through the gateway, events, logs."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.fit import fit_offer
from cortex_app.components.gateway import gateway_card
from cortex_app.components.layout import health_badge, page, state_badge
from cortex_app.states.model_detail import ModelDetailState as D
from cortex_app.states.models import ModelsState

TICK_MS = 1000


def _summary() -> rx.Component:
    row = D.row
    return rx.card(rx.vstack(
        rx.hstack(state_badge(row["state"]), health_badge(row["health"]), rx.text(row["engine"], size="2"),
                  rx.text(row["devices"], size="2", color_scheme="gray"),
                  rx.text("on ", row["host"], size="2", color_scheme="gray", id="detail-host"),
                  spacing="3", align="center"),
        rx.text(row["reason"], size="2", id="state-reason"),
        rx.cond(row["state"] == "loading",
                rx.hstack(rx.spinner(size="1"), rx.text("loading for ", D.loading_elapsed_s, " s of ",
                                                        D.startup_timeout_s, " s allowed", size="2"))),
        rx.cond(row["stale"], rx.callout("Config changed — Apply to restart with it.", icon="info", size="1")),
        rx.text("Image ", rx.code(D.image), " · source ", rx.code(D.source), size="2"),
        rx.cond(D.memory_estimate != "", rx.text("Estimate: ", D.memory_estimate, size="2", id="memory-estimate")),
        rx.cond(D.memory_record != "", rx.text("This run: ", D.memory_record, size="2", id="memory-record")),
        rx.cond(row["endpoint"] != "", rx.vstack(
            rx.text("Endpoint ", rx.code(row["endpoint"]), size="2"),
            rx.code_block(D.curl_example, language="bash", wrap_long_lines=True, width="100%"),
            width="100%")),
        rx.hstack(
            rx.cond(row["can_start"], rx.button("Start", size="1", on_click=ModelsState.start(row["id"]),
                                                id="detail-start")),
            rx.cond(row["can_stop"], rx.button("Stop", size="1", color_scheme="orange", variant="soft",
                                               on_click=ModelsState.stop(row["id"]), id="detail-stop")),
            rx.cond(row["stale"], rx.button("Apply", size="1", on_click=ModelsState.apply(row["id"]))),
            rx.link(rx.button("Edit", size="1", variant="ghost"), href=f"/models/{row['id']}/edit"),
            spacing="2"),
        spacing="3", width="100%"), width="100%")


def _health_chart() -> rx.Component:
    return rx.card(rx.vstack(
        rx.text("Health probe latency (ms)", weight="bold", size="2"),
        rx.cond(D.health_points.length() > 0,
                rx.recharts.line_chart(rx.recharts.line(data_key="ms", stroke=rx.color("accent", 9), dot=False,
                                                        is_animation_active=False, connect_nulls=False),
                                       rx.recharts.x_axis(data_key="t", min_tick_gap=40),
                                       # Evenly spaced whole-number ticks from 0, every one labelled.
                                       rx.recharts.y_axis(domain=[0, "auto"], tick_count=5, allow_decimals=False,
                                                          interval=0, width=48),
                                       rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
                                       rx.recharts.graphing_tooltip(),
                                       data=D.health_points, height=180, width="100%"),
                rx.text("No probes yet: they start once the model runs.", size="2", color_scheme="gray")),
        width="100%"), width="100%")


def _line_chart(title: str, key: str, id: str) -> rx.Component:
    return rx.vstack(
        rx.text(title, size="1", weight="medium"),
        rx.recharts.line_chart(rx.recharts.line(data_key=key, stroke=rx.color("accent", 9), dot=False,
                                                is_animation_active=False, connect_nulls=False),
                               rx.recharts.x_axis(data_key="t", min_tick_gap=40),
                               rx.recharts.y_axis(width=48, domain=[0, "auto"], tick_count=5, interval=0),
                               rx.recharts.cartesian_grid(stroke_dasharray="3 3"), rx.recharts.graphing_tooltip(),
                               data=D.resource_points, height=150, width="100%"),
        width="100%", id=id, spacing="1")


def _resources() -> rx.Component:
    return rx.card(rx.vstack(
        rx.text("Resources", weight="bold", size="2"),
        rx.cond(D.resource_points.length() > 0,
                rx.grid(_line_chart("CPU (% of one core)", "cpu", "chart-cpu"),
                        _line_chart("Memory (MiB)", "mem_mib", "chart-mem"),
                        rx.cond(D.has_gpu_mem, _line_chart("GPU memory (MiB)", "gpu_mib", "chart-gpu")),
                        rx.cond(D.has_tokens, _line_chart("Generated tokens/s", "tokens_s", "chart-tokens")),
                        columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"),
                rx.text("Figures appear while the model runs (the last 10 minutes; a restart begins anew).",
                        size="2", color_scheme="gray")),
        width="100%"), width="100%")


def _events() -> rx.Component:
    return rx.card(rx.vstack(
        rx.hstack(rx.text("Events", weight="bold", size="2"), rx.spacer(),
                  rx.text(D.event_pages, size="1", color_scheme="gray", id="event-pages"),
                  rx.button("Newer", size="1", variant="soft", disabled=D.event_page == 0,
                            on_click=D.newer_events, id="events-newer"),
                  rx.button("Older", size="1", variant="soft", disabled=~D.has_older, on_click=D.older_events,
                            id="events-older"),
                  width="100%", align="center", wrap="wrap"),
        rx.box(rx.table.root(rx.table.body(rx.foreach(D.events, lambda e: rx.table.row(
            rx.table.cell(rx.text(e["at"], size="1")),
            rx.table.cell(rx.text(e["from"], " → ", e["to"], size="1",
                                  weight=rx.cond(e["failed"].to(bool), "bold", "regular"))),
            rx.table.cell(rx.text(e["reason"], size="1")),
            rx.table.cell(rx.text(e["actor"], size="1", color_scheme="gray")),
            # A failure stands out in the timeline.
            class_name=rx.cond(e["failed"].to(bool), "event-row event-failed", "event-row"),
            background=rx.cond(e["failed"].to(bool), rx.color("red", 3), "transparent"),
            color=rx.cond(e["failed"].to(bool), rx.color("red", 11), "inherit")))), size="1", width="100%"),
            width="100%", overflow_x="auto"),
        width="100%"), width="100%")


def _logs() -> rx.Component:
    return rx.card(rx.vstack(
        rx.hstack(rx.text("Logs", weight="bold", size="2"), rx.text(D.logs_note, size="1", color_scheme="gray"),
                  rx.spacer(),
                  rx.input(placeholder="search", value=D.log_query, on_change=D.set_log_query, size="1",
                           id="log-search"),
                  rx.checkbox("follow", checked=D.follow, on_change=D.set_follow, size="1"),
                  width="100%", align="center"),
        rx.el.pre(D.shown_logs, id="logs", style={"maxHeight": "360px", "overflow": "auto", "fontSize": "11px",
                                                  "whiteSpace": "pre-wrap", "width": "100%"}),
        width="100%"), width="100%")


def model_detail() -> rx.Component:
    return page(
        D.row["name"].to(str),
        rx.moment(interval=TICK_MS, on_change=D.tick, display="none"),
        fit_offer(),
        rx.cond(D.found, rx.vstack(_summary(), gateway_card(D.gateway), _resources(), _health_chart(), _events(),
                                   _logs(), spacing="4", width="100%"),
                rx.callout("No such model.", icon="info")),
    )
