"""A Docker Engine that tests (and the chaos harness) may stop and restart.

The session's engine is `make test`'s private dockerd on a fresh machine: that one is ours to
restart. On a machine whose own engine answers at DOCKER_HOST or /var/run/docker.sock, it is
somebody else's and is never touched: a second private engine is started beside it
(scripts/engine.sh with its own folder and bridge, no iptables rules), the images a test
needs are copied into it, and it is stopped when the session ends.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
ENGINE_SH = ROOT / "scripts/engine.sh"
OWN_DIR = "/var/tmp/cortex-engine-own"
OWN_BRIDGE = "cortex-own0:10.251.0.1/24"


@dataclass(frozen=True)
class Engine:
    host: str  # its DOCKER_HOST
    env: dict  # the environment engine.sh needs to act on this engine (its folder, its bridge)
    started_here: bool  # we started it: we stop it at the end

    def _sh(self, verb: str, timeout: float = 120) -> None:
        subprocess.run([str(ENGINE_SH), verb], env=self.env, check=True, capture_output=True, timeout=timeout)

    def restart(self) -> None:
        """A real "Docker daemon restart": stop dockerd, start it again on the same roots."""
        self._sh("restart")

    def stop(self) -> None:
        """The engine goes away (its socket stops answering); `start()` brings it back."""
        self._sh("stop")

    def start(self) -> None:
        self._sh("private")

    def down(self) -> None:
        self._sh("down")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_ENGINE") and k != "DOCKER_HOST"}
    env.update(extra)
    return env


def host_of(env: dict) -> str:
    """The DOCKER_HOST of the private engine scripts/engine.sh acts on with this environment."""
    return subprocess.run([str(ENGINE_SH), "host"], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def private_host() -> str:
    """The DOCKER_HOST of make test's private engine (scripts/engine.sh's default folder)."""
    return host_of(_env())


def copy_images(source_host: str, target_host: str, images: Sequence[str]) -> None:
    """docker save | docker load of each image the target lacks (no registry here)."""
    import docker

    src = docker.DockerClient(base_url=source_host, timeout=300)
    dst = docker.DockerClient(base_url=target_host, timeout=300)
    try:
        for name in images:
            try:
                dst.images.get(name)
                continue
            except docker.errors.ImageNotFound:
                pass
            image = src.images.get(name)
            [loaded] = dst.images.load(b"".join(image.save()))
            repo, _, tag = name.rpartition(":")
            loaded.tag(repo, tag)
    finally:
        src.close()
        dst.close()


def restartable(session_host: str, images: Sequence[str] = ()) -> Engine:
    """The session's engine if it is make test's private one, else a private one beside it
    holding `images` (copied from the session's engine)."""
    if session_host == private_host():
        return Engine(session_host, _env(), started_here=False)
    env = _env(CORTEX_ENGINE_DIR=OWN_DIR, CORTEX_ENGINE_BRIDGE=OWN_BRIDGE)
    out = subprocess.run([str(ENGINE_SH), "private"], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout
    host = out.strip().split("DOCKER_HOST=", 1)[1]
    copy_images(session_host, host, images)
    return Engine(host, env, started_here=True)


def release(engine: Optional[Engine]) -> None:
    """Stop an engine `restartable` started (and remove its bridge); leave any other alone."""
    if engine is not None and engine.started_here:
        engine.down()
