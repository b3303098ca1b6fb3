"""Help text with `code` spans: the backticks of a sentence shown as code, not as backticks."""

from __future__ import annotations

import reflex as rx


def prose(text: str, **props) -> rx.Component:
    """`text`, its backtick-quoted parts in rx.code; `props` go to the rx.text around them."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: show the text as written
        return rx.text(text, **props)
    return rx.text(*[rx.code(part, size=props.get("size", "2")) if i % 2 else part
                     for i, part in enumerate(parts) if part], **props)
