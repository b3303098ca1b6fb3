"""An image's presence on the engine with its Pull button, or its pull's progress bar and
Cancel: the same cell on the System page, the model form and Start's pull offer."""

from __future__ import annotations

import reflex as rx

from cortex_app.states.images import TICK_MS, ImagesState, pull_view


def follow_pulls() -> rx.Component:
    """Put once on a page that shows pulls: their progress follows the client tick while any runs."""
    return rx.cond(ImagesState.pulling, rx.moment(interval=TICK_MS, on_change=ImagesState.load_pulls,
                                                  display="none"))


def image_status(image: rx.Var, present: rx.Var) -> rx.Component:
    """`image` is the canonical reference; `present` whether the engine had it when last read."""
    p = pull_view(image)
    state = p.get("state", "")
    pull_button = rx.button(rx.icon("download", size=12), rx.cond(state == "failed", "Pull again", "Pull"),
                            size="1", variant="soft", on_click=ImagesState.pull(image), class_name="pull-image")
    return rx.vstack(
        rx.cond(
            state == "pulling",
            rx.vstack(
                rx.hstack(rx.badge("pulling", color_scheme="blue"),
                          rx.button("Cancel", size="1", variant="ghost", color_scheme="gray",
                                    on_click=ImagesState.cancel_pull(image), class_name="cancel-pull"),
                          align="center", spacing="2"),
                rx.progress(value=p.get("percent", 0).to(int), max=100, width="220px", class_name="pull-progress"),
                rx.text(p.get("text", ""), size="1", color_scheme="gray", class_name="pull-text"),
                spacing="1"),
            rx.cond(
                present | (state == "done"),
                rx.hstack(rx.badge("present", color_scheme="green", class_name="image-present"),
                          rx.cond(state == "done", rx.text(p.get("text", ""), size="1", color_scheme="gray")),
                          spacing="2", align="center"),
                rx.hstack(rx.badge("missing", color_scheme="orange", class_name="image-missing"), pull_button,
                          spacing="2", align="center"),
            ),
        ),
        rx.cond((state == "failed") | (state == "cancelled"),
                rx.text(p.get("text", ""), size="1", color_scheme=rx.cond(state == "failed", "red", "gray"),
                        class_name="pull-error", max_width="420px")),
        spacing="1",
        class_name="image-status",
    )
