"""`auto` placement, decided purely: given what each reachable host offers a model now, which
host it starts on, or why none.

A model on GPUs goes to the host whose GPUs it fits with the most memory left free (the fit
check's verdict per host, fit.py); a CPU model to the host running the fewest models. Ties go
to the lowest host id (host 1, the console's own, first), so a placement is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from cortex_app.fit import Fit


class NoRoom(ValueError):
    """No reachable host can take the model now; the message says why, host by host."""


@dataclass(frozen=True)
class Candidate:
    host_id: int
    name: str
    verdict: Optional[Fit]  # the fit check on that host (None: its GPUs cannot be read now)
    active: int = 0  # models starting, loading or running there


def choose(candidates: Sequence[Candidate], on_gpu: bool, override_fit: bool = False) -> Candidate:
    """The host for the model. `on_gpu`: it needs GPU memory (its estimate is known), so only
    hosts whose GPUs can be read are candidates; `override_fit`: an admin starts it anyway, on
    the host with the most free memory even where it does not fit."""
    if not candidates:
        raise NoRoom("no host answers now")
    if not on_gpu:
        return min(candidates, key=lambda c: (c.active, c.host_id))
    known = [c for c in candidates if c.verdict is not None]
    if not known:
        raise NoRoom("no host's GPUs can be read now (" + ", ".join(c.name for c in candidates) + ")")
    fitting = [c for c in known if c.verdict.ok] or (known if override_fit else [])
    if not fitting:
        raise NoRoom("it fits on no host: " + "; ".join(f"{c.name}: {c.verdict.reason}" for c in known))
    return min(fitting, key=lambda c: (-c.verdict.free_mib, c.host_id))
