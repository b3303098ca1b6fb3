"""Image pulls the admin asked for: each on a thread of its own, so it goes on when the page
that started it closes, with its progress kept here for any page to show and its end written
to the console's journal. One pull per image at a time; a pull never starts a model."""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import sqlalchemy as sa

from cortex_app import journal
from cortex_app.images import CANCELLED, DONE, FAILED, PULLING, PullError, PullProgress, canonical
from cortex_app.runtime.docker import DockerRuntime, DockerRuntimeError

log = logging.getLogger(__name__)

KEEP_FINISHED_S = 600  # how long a finished pull stays listed (its outcome on the pages)


class Pulls:
    def __init__(self, db: sa.Engine, runtime: DockerRuntime):
        self.db, self.runtime = db, runtime
        self._pulls: dict[str, PullProgress] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, image: str, actor: str) -> PullProgress:
        """Begin pulling `image` (or return the pull already under way)."""
        image = canonical(image)
        with self._lock:
            current = self._pulls.get(image)
            if current is not None and current.state == PULLING:
                return current
            progress = PullProgress(image=image, actor=actor)
            self._pulls[image] = progress
            self._cancel[image] = threading.Event()
            thread = threading.Thread(target=self._run, args=(progress, self._cancel[image]),
                                      name=f"pull {image}", daemon=True)
            self._threads[image] = thread
        log.info("pull of %s started by %s", image, actor)
        thread.start()
        return progress

    def cancel(self, image: str) -> bool:
        """Ask a pull under way to stop; False when none is."""
        with self._lock:
            progress, event = self._pulls.get(canonical(image)), self._cancel.get(canonical(image))
        if progress is None or event is None or progress.state != PULLING:
            return False
        event.set()
        return True

    def get(self, image: str) -> Optional[PullProgress]:
        with self._lock:
            return self._pulls.get(canonical(image))

    def views(self) -> dict[str, dict]:
        """Every pull under way or recently ended, by image: what the pages show."""
        now = time.time()
        with self._lock:
            for image, p in list(self._pulls.items()):
                if p.finished_at and now - p.finished_at > KEEP_FINISHED_S:
                    del self._pulls[image]
                    self._cancel.pop(image, None)
                    self._threads.pop(image, None)
            return {image: p.view() for image, p in self._pulls.items()}

    def wait(self, image: str, timeout: float) -> Optional[PullProgress]:
        """Block until the pull of `image` ends, or `timeout` passes."""
        with self._lock:
            thread = self._threads.get(canonical(image))
        if thread is not None:
            thread.join(timeout)
        return self.get(image)

    def _run(self, progress: PullProgress, cancel: threading.Event) -> None:
        try:
            for msg in self.runtime.pull(progress.image, cancel):
                progress.apply(msg)
            # Cancel pressed as the last message came: the image is there, and says so.
            state, error = (CANCELLED, "") if cancel.is_set() and not progress.finished_cleanly else (DONE, "")
        except (PullError, DockerRuntimeError) as exc:
            state, error = FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a thread's end must always be recorded
            log.exception("pull of %s failed", progress.image)
            state, error = FAILED, f"pull of {progress.image} failed: {exc}"
        progress.error, progress.finished_at, progress.state = error, time.time(), state
        words = {DONE: "pulled", CANCELLED: "pull cancelled", FAILED: "pull failed"}[state]
        journal.record(self.db, "image " + words.split()[-1], progress.image,
                       f"{words} (asked by {progress.actor}): {progress.describe()}")
        log.info("pull of %s ended: %s %s", progress.image, state, error)
