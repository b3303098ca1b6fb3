"""GPUs page: per-GPU figures from NVML, or a plain notice on hosts without one."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.layout import page
from cortex_app.states.gpus import GpuState


def _gpu(g: rx.Var) -> rx.Component:
    return rx.card(rx.vstack(
        rx.hstack(rx.badge(g["host"], color_scheme="gray"), rx.badge("GPU ", g["index"]),
                  rx.text(g["name"], weight="bold"), spacing="2"),
        rx.text("Memory ", g["memory"], size="2"), rx.progress(value=g["memory_pct"].to(int), width="100%"),
        rx.text("Utilisation ", g["util"], "%", size="2"), rx.progress(value=g["util"].to(int), width="100%"),
        rx.text("Temperature ", g["temp"], " · Power ", g["power"], size="2"),
        rx.text("Models: ", g["models"], size="2", color_scheme="gray"),
        spacing="2", width="100%"), width="100%", class_name="gpu-card")


def _history() -> rx.Component:
    return rx.card(rx.vstack(
        rx.text("Utilisation, last 10 minutes (%)", weight="bold", size="2"),
        rx.recharts.line_chart(
            rx.foreach(GpuState.series, lambda key: rx.recharts.line(data_key=key, dot=False,
                                                                      is_animation_active=False)),
            rx.recharts.x_axis(data_key="t"), rx.recharts.y_axis(domain=[0, 100]),
            rx.recharts.legend(), rx.recharts.graphing_tooltip(),
            data=GpuState.history, height=200, width="100%"),
        width="100%"), width="100%")


def _remote() -> rx.Component:
    """Other hosts' GPUs, read by a sampler container on each through its own Docker Engine."""
    return rx.cond(
        (GpuState.remote_gpus.length() > 0) | (GpuState.remote_notes.length() > 0),
        rx.vstack(
            rx.heading("Other hosts", size="4"),
            rx.text("Read every 5 s by a sampler container (nvidia-smi) on each host, through its Docker Engine.",
                    size="2", color_scheme="gray"),
            rx.grid(rx.foreach(GpuState.remote_gpus, _gpu), columns=rx.breakpoints(initial="1", md="2"),
                    spacing="4", width="100%", id="remote-gpus"),
            rx.foreach(GpuState.remote_notes, lambda n: rx.callout(
                rx.text(rx.text.strong(n["host"]), ": ", n["note"]), icon="info", size="1",
                class_name="remote-gpu-note")),
            spacing="3", width="100%"))


def gpus() -> rx.Component:
    return page(
        "GPUs",
        rx.cond(~GpuState.checked, rx.hstack(rx.spinner(), rx.text("Reading the GPUs…")),
                rx.vstack(
                    rx.heading("This host (local)", size="4"),
                    rx.cond(GpuState.available,
                            rx.vstack(rx.text("NVIDIA driver ", GpuState.driver, size="2", color_scheme="gray"),
                                      rx.grid(rx.foreach(GpuState.gpus, _gpu), columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"),
                                      _history(), width="100%"),
                            rx.callout(GpuState.notice, icon="info", id="gpu-notice")),
                    _remote(), spacing="4", width="100%")),
        actions=rx.button(rx.icon("refresh-cw", size=14), "Refresh", size="1", variant="soft",
                          on_click=GpuState.load),
    )
