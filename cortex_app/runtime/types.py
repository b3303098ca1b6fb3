"""What the rest of Cortex knows about containers and engines: plain dataclasses, no SDK.

runtime/docker.py fills them; the planner (reconcile/plan.py) and everything else reads
them without importing the docker SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from cortex_app.engines.spec import LABEL_MODEL_ID, LABEL_SPEC_HASH


@dataclass(frozen=True)
class EngineInfo:
    host: str
    reachable: bool
    version: Optional[str] = None
    api_version: Optional[str] = None
    error: Optional[str] = None
    problem: Optional[str] = None  # what failed: unreachable | tls | auth | host-key | not-docker
    seen_host_key: str = ""  # ssh: the host key the engine's sshd showed


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    state: str  # created | running | exited | dead | paused | restarting | removing
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: Optional[int] = None
    oom_killed: bool = False
    restart_policy: Optional[str] = None  # only from inspect
    image: str = ""  # the image as the container was created with it (a name, or an id)
    command: tuple[str, ...] = ()  # entrypoint + command, only from inspect

    @property
    def model_id(self) -> Optional[int]:
        raw = self.labels.get(LABEL_MODEL_ID, "")
        return int(raw) if raw.isdigit() else None

    @property
    def spec_hash(self) -> Optional[str]:
        return self.labels.get(LABEL_SPEC_HASH)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def live(self) -> bool:
        """Its processes exist (running, paused, restarting): it has to be stopped to be gone."""
        return self.state in ("running", "paused", "restarting")
