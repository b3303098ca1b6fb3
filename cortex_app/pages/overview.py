"""Overview, the landing page: the host, models by state, recent failures, webhook health."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.layout import page, state_badge
from cortex_app.states.overview import TICK_MS, OverviewState as O


def _card(icon: str, title: str, *children, id: str) -> rx.Component:
    return rx.card(rx.vstack(rx.hstack(rx.icon(icon, size=18), rx.text(title, weight="bold"), spacing="2",
                                       align="center"),
                             *children, spacing="2", width="100%"), width="100%", id=id)


def _host() -> rx.Component:
    e = O.engine
    return _card(
        "server", "Host",
        rx.cond(e["reachable"].to(bool),
                rx.hstack(rx.badge("engine reachable", color_scheme="green"),
                          rx.text("Docker ", e["version"].to(str), size="2"), spacing="2", align="center"),
                rx.vstack(rx.badge("engine unreachable", color_scheme="red"),
                          rx.text(e["error"].to(str), size="1", color_scheme="red"), spacing="1")),
        rx.cond(O.gpu_notice != "", rx.text(O.gpu_notice, size="2", color_scheme="gray", id="overview-gpu-notice"),
                rx.foreach(O.gpus, lambda g: rx.vstack(
                    rx.hstack(rx.badge("GPU ", g["index"]), rx.text(g["name"], size="2"), spacing="2"),
                    rx.progress(value=g["pct"].to(int), max=100, width="100%"),
                    rx.text(g["memory"], " · ", g["util"], " % busy", size="1", color_scheme="gray"),
                    spacing="1", width="100%", class_name="overview-gpu"))),
        id="overview-host")


def _models() -> rx.Component:
    return _card(
        "boxes", "Models",
        rx.flex(rx.foreach(O.counts, lambda c: rx.hstack(state_badge(c["state"]),
                                                         rx.text(c["count"], weight="bold", size="3"),
                                                         spacing="1", align="center",
                                                         class_name="overview-count",
                                                         id="overview-count-" + c["state"].to(str))),
                wrap="wrap", spacing="4"),
        rx.cond(O.running_cost != "", rx.text("Running models use ", O.running_cost, size="2",
                                               color_scheme="gray", id="overview-cost")),
        rx.link("All models →", href="/models", size="2"),
        id="overview-models")


def _failures() -> rx.Component:
    return _card(
        "triangle-alert", "Failed in the last 24 hours",
        rx.cond(O.failures.length() > 0,
                rx.table.root(rx.table.body(rx.foreach(O.failures, lambda f: rx.table.row(
                    rx.table.cell(rx.text(f["at"], size="1")),
                    rx.table.cell(rx.link(f["model"], href="/models/" + f["model_id"].to(str), size="2")),
                    rx.table.cell(rx.text(f["reason"], size="1", color_scheme="red")),
                    class_name="overview-failure"))), size="1", width="100%"),
                rx.text("Nothing failed in the last 24 hours.", size="2", color_scheme="gray")),
        id="overview-failures")


def _webhooks() -> rx.Component:
    d = O.deliveries
    return _card(
        "webhook", "Webhook deliveries, last 24 hours",
        rx.hstack(rx.badge(d["label"].to(str), color_scheme=d["color"].to(str), id="overview-webhook-verdict"),
                  rx.text(d["summary"].to(str), size="2"),
                  spacing="2", align="center", wrap="wrap"),
        rx.text("Last delivered: ", d["last_ok"].to(str), size="1", color_scheme="gray"),
        rx.link("Delivery log →", href="/settings", size="2"),
        id="overview-webhooks")


def overview() -> rx.Component:
    return page(
        "Overview",
        rx.moment(interval=TICK_MS, on_change=O.tick, display="none"),
        rx.cond(~O.loaded, rx.hstack(rx.spinner(), rx.text("Reading…")),
                rx.grid(_host(), _models(), _failures(), _webhooks(),
                        columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%")),
    )
