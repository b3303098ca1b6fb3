"""Sign-in and first-run admin creation."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.layout import centered_card
from cortex_app.components.prose import prose
from cortex_app.states.auth import AuthState


def _error() -> rx.Component:
    return rx.cond(AuthState.error != "",
                   rx.callout(AuthState.error, icon="triangle_alert", color_scheme="red", size="1", id="auth-error"))


def _field(name: str, label: str, kind: str = "text") -> rx.Component:
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.input(name=name, type=kind, id=f"field-{name}", width="100%", required=True),
        rx.cond(AuthState.field_errors.contains(name),
                rx.text(AuthState.field_errors.get(name, ""), size="1", color_scheme="red")),
        spacing="1", width="100%",
    )


def _submit(label: str, id_: str, **props) -> rx.Component:
    """A submit button that stays disabled until the page is hydrated: before React owns the
    form, a click or Enter would submit it natively, as a GET carrying the password in the URL
    (into history and access logs)."""
    return rx.button(label, type="submit", width="100%", id=id_, disabled=~rx.State.is_hydrated, **props)


def login() -> rx.Component:
    return centered_card(
        rx.text("Sign in to manage this host's models.", size="2", color_scheme="gray"),
        rx.form(
            rx.vstack(_field("username", "Username"), _field("password", "Password", "password"), _error(),
                      _submit("Sign in", "sign-in", loading=AuthState.busy),
                      spacing="3", width="100%"),
            on_submit=AuthState.sign_in, reset_on_submit=False, width="100%",
        ),
    )


def setup() -> rx.Component:
    return centered_card(
        rx.text("First run: create the admin account. There is no default password.", size="2",
                color_scheme="gray"),
        prose("The setup code is in what the console printed when it started (`make up`'s output, or "
              "`docker logs cortex`).", size="2", color_scheme="gray"),
        rx.form(
            rx.vstack(_field("setup_code", "Setup code"), _field("username", "Username"), _field("password", "Password (10+ characters)", "password"),
                      _field("confirm", "Password again", "password"), _error(),
                      _submit("Create admin and sign in", "create-admin"),
                      spacing="3", width="100%"),
            on_submit=AuthState.create_first_admin, reset_on_submit=False, width="100%",
        ),
    )
