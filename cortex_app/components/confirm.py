"""A destructive action behind a confirmation: a small red button that opens a dialog naming
what goes, with Cancel and the action itself."""

from __future__ import annotations

import reflex as rx


def confirmed(verb: str, name, description: str, on_confirm, trigger_class: str, confirm_class: str) -> rx.Component:
    """`verb` labels both buttons and titles the dialog ("Delete <name>?")."""
    return rx.alert_dialog.root(
        rx.alert_dialog.trigger(rx.button(verb, size="1", color_scheme="red", variant="ghost",
                                          class_name=trigger_class)),
        rx.alert_dialog.content(
            rx.alert_dialog.title(f"{verb} ", name, "?"),
            rx.alert_dialog.description(description),
            rx.hstack(rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                      rx.alert_dialog.action(rx.button(verb, color_scheme="red", on_click=on_confirm,
                                                       class_name=confirm_class)),
                      spacing="3", justify="end"),
        ),
    )
