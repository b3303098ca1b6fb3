"""Usage: the gateway's requests over a window, per model and per key, and the CSV export."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.layout import page
from cortex_app.states.usage import WINDOW_LABELS, UsageState as U

COLUMNS = ("Requests", "Errors", "Prompt tokens", "Completion tokens", "Avg latency (ms)")


def _totals(title: str, first: str, rows: rx.Var, id: str) -> rx.Component:
    return rx.card(rx.vstack(
        rx.text(title, weight="bold", size="2"),
        rx.cond(rows.length() > 0,
                rx.box(rx.table.root(
                    rx.table.header(rx.table.row(*[rx.table.column_header_cell(n) for n in (first, *COLUMNS)])),
                    rx.table.body(rx.foreach(rows, lambda r: rx.table.row(
                        rx.table.cell(rx.code(r["name"], size="1")), rx.table.cell(r["requests"]),
                        rx.table.cell(r["errors"]), rx.table.cell(r["prompt"]), rx.table.cell(r["completion"]),
                        rx.table.cell(r["latency"]), class_name="usage-row"))),
                    size="1", width="100%"), width="100%", overflow_x="auto"),
                rx.text("No requests in ", U.window_label, ".", size="2", color_scheme="gray")),
        spacing="2", width="100%"), width="100%", id=id)


def _chart(title: str, points: rx.Var, series: rx.Var, id: str) -> rx.Component:
    return rx.card(rx.vstack(
        rx.text(title, weight="bold", size="2"),
        rx.cond(series.length() > 0,
                rx.recharts.bar_chart(
                    rx.foreach(series, lambda s: rx.recharts.bar(data_key=s["key"].to(str), name=s["name"].to(str),
                                                                 stack_id="tokens", fill=s["color"].to(str),
                                                                 is_animation_active=False)),
                    rx.recharts.x_axis(data_key="t", min_tick_gap=40),
                    rx.recharts.y_axis(width=64, allow_decimals=False),
                    rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
                    rx.recharts.legend(), rx.recharts.graphing_tooltip(),
                    data=points, height=220, width="100%"),
                rx.text("No tokens in ", U.window_label, ".", size="2", color_scheme="gray")),
        spacing="2", width="100%"), width="100%", id=id)


def _toolbar() -> rx.Component:
    return rx.hstack(
        rx.select.root(rx.select.trigger(id="usage-window"), rx.select.content(
            *[rx.select.item(label.capitalize(), value=w) for w, label in WINDOW_LABELS.items()]),
            value=U.window, on_change=U.set_window),
        # A plain anchor, not a client-side route: the browser fetches the file with its
        # session cookie (a read, which /api/usage.csv takes from a cookie).
        rx.button(rx.el.a(rx.icon("download", size=14), "Export CSV", href=U.csv_href, id="usage-csv"),
                  as_child=True, size="2", variant="soft"),
        rx.button(rx.icon("refresh-cw", size=14), "Refresh", size="2", variant="ghost", on_click=U.load),
        spacing="3", align="center", wrap="wrap")


def usage() -> rx.Component:
    return page(
        "Usage",
        _toolbar(),
        rx.cond(~U.loaded, rx.hstack(rx.spinner(), rx.text("Reading…")), rx.vstack(
            rx.cond(~U.has_usage, rx.callout(
                rx.text("No gateway requests in ", U.window_label, " yet. Make a key on the ",
                        rx.link("Keys", href="/keys"), " page and send OpenAI API requests to the console's /v1."),
                icon="info", id="usage-empty")),
            _totals("Per model", "Model", U.by_model, "usage-by-model"),
            _totals("Per key", "Key", U.by_key, "usage-by-key"),
            rx.grid(_chart("Tokens per model (UTC)", U.model_points, U.model_series, "usage-chart-model"),
                    _chart("Tokens per key (UTC)", U.key_points, U.key_series, "usage-chart-key"),
                    columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"),
            spacing="4", width="100%")),
    )
