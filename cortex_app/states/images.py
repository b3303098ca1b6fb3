"""Image pulls on the pages: Pull and Cancel, and every pull's progress (`pulls`, by image),
followed at the client tick only while a pull is under way."""

from __future__ import annotations

import reflex as rx

from cortex_app.images import canonical
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState

TICK_MS = 400


class ImagesState(AdminState):
    pulls: dict[str, dict] = {}  # canonical image -> PullProgress.view()

    @rx.var
    def pulling(self) -> bool:
        return any(p["active"] for p in self.pulls.values())

    def _follow(self) -> None:
        views = services().pulls.views()  # in memory: no Docker call on the event loop
        if views != self.pulls:
            self.pulls = views

    @rx.event
    async def load_pulls(self, _=None):
        if await self._admin() is None:
            return rx.redirect("/login")
        self._follow()

    @rx.event
    async def pull(self, image: str):
        user = await self._admin()
        if user is None:
            return rx.redirect("/login")
        if not image.strip():
            return rx.toast.error("no image named")
        services().pulls.start(image, actor=f"admin:{user} (browser)")  # its own thread; returns at once
        self._follow()
        return rx.toast.info(f"pulling {canonical(image)}")

    @rx.event
    async def cancel_pull(self, image: str):
        if await self._admin() is None:
            return rx.redirect("/login")
        cancelled = services().pulls.cancel(image)
        self._follow()
        if not cancelled:
            return rx.toast.warning(f"no pull of {image} is under way")


def pull_view(image: rx.Var) -> rx.Var:
    """The pull of `image` (a canonical reference) as the page knows it, or an empty dict."""
    return ImagesState.pulls.get(image.to(str), {})
