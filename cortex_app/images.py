"""Engine images, decided in plain functions: whether an image reference is on the engine,
what a pull's progress is from the Docker Engine's JSON messages, and what a failed pull
tells an admin. No Docker here: `runtime.docker` streams the messages, `pulls` runs pulls."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Optional

PULLING, DONE, FAILED, CANCELLED = "pulling", "done", "failed", "cancelled"


def split_reference(image: str) -> tuple[str, str]:
    """(repository, tag or digest) of an image reference; the tag defaults to `latest`.
    A registry's port (`127.0.0.1:5000/x`) is not a tag."""
    image = image.strip()
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def canonical(image: str) -> str:
    """The reference as the engine lists it: `name` means `name:latest`, and Docker Hub's own
    prefixes (`docker.io/`, `docker.io/library/`) are left out."""
    repo, ref = split_reference(image)
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
            break
    return f"{repo}@{ref}" if ref.startswith("sha256:") else f"{repo}:{ref}"


def is_present(image: str, tags: set[str]) -> bool:
    """Whether `image` is among the engine's tags and digests (`image_tags`)."""
    return canonical(image) in tags or image.strip() in tags


def registry_of(image: str) -> str:
    """The registry a reference names (Docker Hub when its first part is not a host)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


# A layer is downloaded, then extracted: the bar gives the download this share of a layer.
DOWNLOAD_SHARE = 0.9


@dataclass
class PullProgress:
    """One pull: its layers' progress as the engine reports it, and how it ended. The pull's
    thread applies messages while pages read views: both under the progress's own lock."""
    image: str
    actor: str = ""
    state: str = PULLING
    error: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: Optional[float] = None
    # layer id -> [bytes downloaded, bytes in all (0 while unknown), extracted 0..1, done]
    layers: dict[str, list] = field(default_factory=dict)
    status: str = "asking the registry"
    _shown: float = 0.0  # the bar never goes back (a layer's size is learnt only when it starts)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def apply(self, msg: dict) -> None:
        """Fold one of the engine's pull messages in (`{"status", "id", "progressDetail"}`)."""
        if msg.get("error") or msg.get("errorDetail"):
            raise PullError(explain_pull_error(self.image, msg.get("error")
                                               or (msg.get("errorDetail") or {}).get("message", "")))
        status, layer = str(msg.get("status") or ""), msg.get("id")
        detail = msg.get("progressDetail") or {}
        with self._lock:
            if not layer or status.startswith(("Pulling from", "Digest:", "Status:")) or layer == split_reference(
                    self.image)[1]:
                if status:
                    self.status = status
                return
            row = self.layers.setdefault(layer, [0, 0, 0.0, False])
            if status == "Downloading" and detail.get("total"):
                row[0], row[1] = int(detail.get("current") or 0), int(detail["total"])
            elif status in ("Download complete", "Verifying Checksum") and row[1]:
                row[0] = row[1]
            elif status == "Extracting" and detail.get("total"):
                row[0] = row[1] or row[0]
                row[2] = min(1.0, int(detail.get("current") or 0) / int(detail["total"]))
            elif status in ("Pull complete", "Already exists"):
                row[0], row[2], row[3] = row[1], 1.0, True
            self.status = status or self.status

    @property
    def finished_cleanly(self) -> bool:
        """The engine said the image is there (its last word on a pull that went to the end)."""
        return self.status.startswith(("Status: Downloaded newer image", "Status: Image is up to date"))

    def _fraction(self) -> float:
        rows = list(self.layers.values())
        if self.state == DONE:
            return 1.0
        if not rows:
            return 0.0
        known = [r[1] for r in rows if r[1]]
        guess = sum(known) / len(known) if known else 1
        # A layer weighs its size; one still waiting weighs as an average one; one the engine
        # already had ("Already exists") weighs nothing: there is nothing to fetch.
        weights = [r[1] or (0 if r[3] else guess) for r in rows]
        done = [1.0 if r[3] else (r[0] / r[1] if r[1] else 0.0) * DOWNLOAD_SHARE + r[2] * (1 - DOWNLOAD_SHARE)
                for r in rows]
        now = (sum(w * d for w, d in zip(weights, done)) / sum(weights) if sum(weights)
               else sum(done) / len(done))
        self._shown = max(self._shown, min(1.0, now))
        return self._shown

    @property
    def fraction(self) -> float:
        """0..1: each layer's download and extraction, weighted by its size (an average size
        while it waits); never less than shown before."""
        with self._lock:
            return self._fraction()

    def _describe(self) -> str:
        if self.state == FAILED:
            return self.error
        if self.state == CANCELLED:
            return "cancelled; nothing was kept of a layer not finished"
        rows = list(self.layers.values())
        done = sum(1 for r in rows if r[3])
        total = sum(r[1] for r in rows)
        got = sum(r[0] for r in rows)
        if self.state == DONE:
            took = (self.finished_at or time.time()) - self.started_at
            return f"pulled in {took:.1f} s" + (f" ({_mb(total)})" if total else "")
        if not rows:
            return self.status
        size = f"{_mb(got)} of {_mb(total)}, " if total else ""
        return f"{size}{done} of {len(rows)} layers done"

    def describe(self) -> str:
        with self._lock:
            return self._describe()

    def view(self) -> dict:
        """What pages show: plain values only."""
        with self._lock:
            return {"image": self.image, "state": self.state, "percent": round(self._fraction() * 100),
                    "text": self._describe(), "active": self.state == PULLING}


class PullError(RuntimeError):
    """A pull that ended with an error; the message is for the admin."""


def explain_pull_error(image: str, raw: str) -> str:
    """The engine's error, said so an admin knows what to do."""
    text = " ".join(str(raw or "").split())[:300] or "unknown error"
    low = text.lower()
    registry = registry_of(image)
    if any(k in low for k in ("unauthorized", "authentication required", "no basic auth credentials",
                              "denied: requested access")):
        return (f"the registry {registry} wants credentials for {image}: run `docker login {registry}` as the "
                f"user the console runs as, then pull again [{text}]")
    if any(k in low for k in ("manifest unknown", "not found", "does not exist", "repository name not known")):
        return f"{image} is not in the registry {registry}: check the name and tag [{text}]"
    if "no space left on device" in low:
        return f"the Docker Engine's disk is full: free space (docker system df) and pull again [{text}]"
    if any(k in low for k in ("connection refused", "no such host", "i/o timeout", "timeout", "dial tcp",
                              "server gave http response to https client", "tls")):
        return f"the registry {registry} cannot be reached from the Docker Engine [{text}]"
    return f"pull of {image} failed [{text}]"
