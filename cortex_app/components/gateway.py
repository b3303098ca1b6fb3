"""The model detail page's card "Use it through the gateway": a curl and an openai-Python call
to the model at the console's /v1, each with a Copy button, and the model's request defaults."""

from __future__ import annotations

import reflex as rx


def _example(title: str, code: rx.Var, language: str, id: str) -> rx.Component:
    return rx.vstack(
        rx.hstack(rx.text(title, size="1", weight="medium"), rx.spacer(),
                  rx.button(rx.icon("copy", size=14), "Copy", size="1", variant="soft",
                            on_click=rx.set_clipboard(code), id=f"copy-{id}"),
                  width="100%", align="center"),
        rx.code_block(code, language=language, wrap_long_lines=True, width="100%", id=id),
        spacing="1", width="100%")


def gateway_card(view: rx.Var) -> rx.Component:
    """`view`: the state's gateway_examples() dict."""
    return rx.card(rx.vstack(
        rx.hstack(rx.icon("plug", size=16), rx.text("Use it through the gateway", weight="bold", size="2"),
                  spacing="2", align="center"),
        rx.text("Any OpenAI client, at ", rx.code(view["base"].to(str), id="gateway-base"),
                ", with an inference key (", rx.link("Keys", href="/keys"),
                ") in $CORTEX_KEY. It answers while the model runs.", size="2", color_scheme="gray"),
        rx.grid(_example("curl", view["curl"].to(str), "bash", "gateway-curl"),
                _example("Python (openai)", view["python"].to(str), "python", "gateway-python"),
                columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"),
        rx.cond(view["defaults"].to(str) != "", rx.vstack(
            rx.text("Request defaults: the gateway adds these where a request does not set them", size="1",
                    weight="medium"),
            rx.code_block(view["defaults"].to(str), language="json", width="100%", id="gateway-defaults"),
            spacing="1", width="100%")),
        spacing="3", width="100%"), width="100%", id="gateway-example")
