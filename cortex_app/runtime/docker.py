"""The one module that imports `docker`: Cortex's whole conversation with the Docker Engine.

It returns plain dataclasses and raises `DockerRuntimeError` subclasses with messages an
admin can act on. Every call here blocks; async code runs it with `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import docker
import docker.errors
import requests.exceptions

# Labels on every container Cortex manages; containers are found by these, never by name.
LABEL_MANAGED = "cortex.managed"
LABEL_MODEL_ID = "cortex.model-id"
LABEL_SPEC_HASH = "cortex.spec-hash"


class DockerRuntimeError(RuntimeError):
    """Base of every error this module raises."""


class EngineUnreachable(DockerRuntimeError):
    """No Docker Engine answers at the configured host."""


@dataclass(frozen=True)
class EngineInfo:
    host: str
    reachable: bool
    version: Optional[str] = None
    api_version: Optional[str] = None
    error: Optional[str] = None


def client(docker_host: str, timeout: float = 10) -> docker.DockerClient:
    """A client bound to `docker_host`; raises EngineUnreachable if nothing answers there."""
    try:
        c = docker.DockerClient(base_url=docker_host, timeout=timeout)
        c.ping()
        return c
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise EngineUnreachable(
            f"no Docker Engine answers at {docker_host} ({_why(exc)}); "
            "start Docker or point DOCKER_HOST at a running engine"
        ) from None


def engine_info(docker_host: str, timeout: float = 3) -> EngineInfo:
    """Whether the engine answers, and its version. Never raises."""
    try:
        c = client(docker_host, timeout=timeout)
    except EngineUnreachable as exc:
        return EngineInfo(host=docker_host, reachable=False, error=str(exc))
    try:
        v = c.version()
        return EngineInfo(host=docker_host, reachable=True, version=v.get("Version"),
                          api_version=v.get("ApiVersion"))
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return EngineInfo(host=docker_host, reachable=False, error=f"engine at {docker_host} failed: {_why(exc)}")
    finally:
        c.close()


def _why(exc: BaseException) -> str:
    """The innermost useful reason, without the chain of wrapper exceptions."""
    text = str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__
