"""The page frame every signed-in page shares: a sidebar with navigation and a content column;
below 1024 px (a phone, a narrow window) a top bar with a menu instead of the sidebar."""

from __future__ import annotations

import reflex as rx

from cortex_app.states.auth import AuthState

NAV = [("Overview", "/", "layout-dashboard"), ("Models", "/models", "boxes"), ("Keys", "/keys", "key-round"),
       ("Usage", "/usage", "chart-column"), ("GPUs", "/gpus", "cpu"), ("Hosts", "/hosts", "network"),
       ("System", "/system", "server"),
       ("Settings", "/settings", "settings")]
WIDE = "md"  # from this breakpoint (1024 px) up the sidebar shows; below it, the top bar


def wide_only(display: str = "flex"):
    return rx.breakpoints(initial="none", **{WIDE: display})


def narrow_only(display: str = "flex"):
    return rx.breakpoints(initial=display, **{WIDE: "none"})


def _nav_item(label: str, href: str, icon: str) -> rx.Component:
    return rx.link(
        rx.hstack(rx.icon(icon, size=16), rx.text(label, size="2"), align="center", spacing="2"),
        href=href,
        underline="none",
        padding="6px 10px",
        border_radius="6px",
        _hover={"background": rx.color("gray", 4)},
    )


def sidebar() -> rx.Component:
    return rx.vstack(
        rx.hstack(rx.icon("brain-circuit", size=22), rx.heading("Cortex", size="5"), align="center", spacing="2"),
        rx.text("LLM engines on this host", size="1", color_scheme="gray"),
        rx.divider(),
        *[_nav_item(*item) for item in NAV],
        rx.spacer(),
        rx.hstack(rx.icon("user", size=14), rx.text(AuthState.username, size="1"), spacing="1", align="center"),
        rx.hstack(
            rx.button(rx.icon("log-out", size=14), "Sign out", size="1", variant="soft", color_scheme="gray",
                      on_click=AuthState.sign_out, id="sign-out"),
            rx.color_mode.button(size="1", variant="ghost"),
            spacing="2",
        ),
        width="200px",
        min_width="200px",
        height="100vh",
        padding="16px",
        spacing="2",
        border_right=f"1px solid {rx.color('gray', 5)}",
        position="sticky",
        top="0",
        display=wide_only(),
    )


def top_bar() -> rx.Component:
    return rx.hstack(
        rx.hstack(rx.icon("brain-circuit", size=20), rx.heading("Cortex", size="4"), align="center", spacing="2"),
        rx.spacer(),
        rx.menu.root(
            rx.menu.trigger(rx.button(rx.icon("menu", size=16), "Menu", size="2", variant="soft", id="nav-menu")),
            rx.menu.content(
                *[rx.menu.item(rx.hstack(rx.icon(icon, size=14), label, spacing="2", align="center"),
                               on_click=rx.redirect(href), class_name="nav-item") for label, href, icon in NAV],
                rx.menu.separator(),
                rx.menu.item(rx.hstack(rx.icon("log-out", size=14), "Sign out ", AuthState.username, spacing="2",
                                       align="center"), on_click=AuthState.sign_out, color="red"),
            ),
        ),
        width="100%", align="center", padding="10px 12px",
        border_bottom=f"1px solid {rx.color('gray', 5)}",
        display=narrow_only(),
    )


def page(title: rx.Var | str, *children: rx.Component, actions: rx.Component | None = None) -> rx.Component:
    return rx.flex(
        sidebar(),
        top_bar(),
        rx.vstack(
            rx.hstack(rx.heading(title, size="6", id="page-title"), rx.spacer(), actions or rx.fragment(), width="100%",
                      align="center", wrap="wrap"),
            *children,
            padding=rx.breakpoints(initial="12px", **{WIDE: "24px"}), spacing="4", width="100%",
            max_width="1200px", min_width="0",
        ),
        direction=rx.breakpoints(initial="column", **{WIDE: "row"}),
        spacing="0",
        align="start",
        width="100%",
    )


STATE_COLORS = {"running": "green", "loading": "blue", "starting": "blue", "stopping": "orange",
                "stopped": "gray", "failed": "red"}


def state_badge(state: rx.Var) -> rx.Component:
    return rx.match(
        state,
        *[(s, rx.badge(s, color_scheme=c, variant="soft", class_name="state-badge")) for s, c in STATE_COLORS.items()],
        rx.badge(state, class_name="state-badge"),
    )


def health_badge(health: rx.Var) -> rx.Component:
    return rx.match(
        health,
        ("healthy", rx.badge("healthy", color_scheme="green", variant="outline")),
        ("unhealthy", rx.badge("unhealthy", color_scheme="red", variant="outline")),
        ("unknown", rx.badge("unknown", color_scheme="gray", variant="outline")),
        ("host unreachable", rx.badge("host unreachable", color_scheme="orange", variant="outline",
                                      class_name="host-unreachable")),
        rx.text("—", size="1", color_scheme="gray"),
    )


def centered_card(*children: rx.Component) -> rx.Component:
    """The frame of the sign-in and first-run pages."""
    return rx.center(
        rx.card(rx.vstack(rx.hstack(rx.icon("brain-circuit", size=24), rx.heading("Cortex", size="6"),
                                    align="center", spacing="2"), *children, spacing="3", width="100%"),
                width="380px"),
        height="100vh",
    )
