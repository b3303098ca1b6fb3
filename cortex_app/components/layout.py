"""The page frame every page shares: a sidebar with navigation and a content column."""

from __future__ import annotations

import reflex as rx

NAV = [("Overview", "/", "layout-dashboard")]


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
        rx.hstack(rx.icon("cpu", size=22), rx.heading("Cortex", size="5"), align="center", spacing="2"),
        rx.text("LLM engines on this host", size="1", color_scheme="gray"),
        rx.divider(),
        *[_nav_item(*item) for item in NAV],
        rx.spacer(),
        rx.color_mode.button(size="1", variant="ghost"),
        width="220px",
        min_width="220px",
        height="100vh",
        padding="16px",
        spacing="2",
        border_right=f"1px solid {rx.color('gray', 5)}",
        position="sticky",
        top="0",
    )


def page(title: str, *children: rx.Component) -> rx.Component:
    return rx.hstack(
        sidebar(),
        rx.vstack(rx.heading(title, size="6"), *children, padding="24px", spacing="4", width="100%",
                  max_width="1100px"),
        spacing="0",
        align="start",
        width="100%",
    )
