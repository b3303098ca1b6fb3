"""The dialog Start opens when the fit check refuses a model: the numbers, and a way to start
it anyway, this once (used on the Models page and the model's own page)."""

from __future__ import annotations

import reflex as rx

from cortex_app.states.models import ModelsState


def fit_offer() -> rx.Component:
    offer = ModelsState.fit_offer
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title("Not enough free GPU memory"),
            rx.alert_dialog.description(rx.text(offer["why"].to(str), size="2", id="fit-why")),
            rx.text("Starting anyway may end in a CUDA out-of-memory error once the model loads.", size="2",
                    color_scheme="gray", padding_y="8px"),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                rx.alert_dialog.action(rx.button(rx.cond(offer["verb"].to(str) == "apply", "Apply anyway",
                                                         "Start anyway"), color_scheme="orange", id="fit-start-anyway",
                                                 on_click=ModelsState.start_anyway(offer["model_id"].to(int)))),
                spacing="3", justify="end"),
            id="fit-offer",
        ),
        open=ModelsState.offering_fit,
        on_open_change=ModelsState.fit_offer_open,
    )
