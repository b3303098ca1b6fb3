"""Usage page: what the gateway served over a window (24 hours, 7 or 30 days): totals per
model and per key, tokens over time for each, and the link to the CSV export of every request."""

from __future__ import annotations

import asyncio

import reflex as rx

from cortex_app.gateway import usage
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState

WINDOW_LABELS = {"24h": "the last 24 hours", "7d": "the last 7 days", "30d": "the last 30 days"}
PALETTE = ("blue", "orange", "green", "purple", "red", "cyan", "amber", "pink", "teal", "indigo")


def total_row(t: usage.Total) -> dict:
    return {"name": t.name, "requests": f"{t.requests:,}", "errors": f"{t.errors:,}",
            "prompt": f"{t.prompt_tokens:,}", "completion": f"{t.completion_tokens:,}",
            "latency": f"{t.avg_latency_ms:,.1f}"}


def chart_of(labels: list[str], values: dict[str, list]) -> tuple[list[dict], list[dict]]:
    """A stacked chart's points and its series, the busiest first. Each name gets a data key of
    its own (s0, s1, ...): recharts reads a dot in a data key as a path, and served names have
    dots (llama-3.1-8b)."""
    names = sorted(values, key=lambda n: (-sum(values[n]), n))
    series = [{"key": f"s{i}", "name": n, "color": f"var(--{PALETTE[i % len(PALETTE)]}-9)"}
              for i, n in enumerate(names)]
    points = [{"t": t, **{s["key"]: values[s["name"]][j] for s in series}} for j, t in enumerate(labels)]
    return points, series


class UsageState(AdminState):
    window: str = "24h"
    loaded: bool = False
    by_model: list[dict] = []
    by_key: list[dict] = []
    model_points: list[dict] = []
    model_series: list[dict] = []
    key_points: list[dict] = []
    key_series: list[dict] = []

    @rx.var
    def csv_href(self) -> str:
        return f"/api/usage.csv?window={self.window}"

    @rx.var
    def window_label(self) -> str:
        return WINDOW_LABELS.get(self.window, self.window)

    @rx.var
    def has_usage(self) -> bool:
        return bool(self.by_model or self.by_key)

    def _read(self, window: str):
        db = services().db
        return ([total_row(t) for t in usage.totals(db, window, by="model")],
                [total_row(t) for t in usage.totals(db, window, by="key")],
                chart_of(*usage.series(db, window, by="model")), chart_of(*usage.series(db, window, by="key")))

    async def _refresh(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        self.by_model, self.by_key, (self.model_points, self.model_series), (self.key_points, self.key_series) = \
            await asyncio.to_thread(self._read, self.window)
        self.loaded = True

    @rx.event
    async def load(self):
        return await self._refresh()

    @rx.event
    async def set_window(self, v: str):
        if v in usage.WINDOWS:
            self.window = v
        return await self._refresh()
