"""Where the console runs, and so how its model containers are wired to it. Decisions only.

Bare metal: each model's port is published on loopback and probed there; the models dir is
bind-mounted from the very path the console sees.

In a container (the image): the console and its models share a Docker network
(CORTEX_DOCKER_NETWORK, created if missing) and models are probed by container name.
Bind-mount sources must be paths on the Docker host, which the console cannot see; it
reads them off its own container's mounts (a bind mount, or a volume's folder on the
host). CORTEX_MODELS_HOST_DIR says the same thing by hand, and is checked against the
mounts when both are known.

On another host (hosts.py): its models join a network of that machine's own and publish no
port; the console reaches them through that host's ingress (cortex_app/ingress), the one port
published there; they mount that machine's folders (`remote()`, pure).

`decide()` is pure; `resolve()` asks the runtime (duck-typed: self_container,
ensure_network, connect_network) and then decides.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from cortex_app.settings import Settings

# Docker writes these per-container files and bind-mounts them in; their host paths carry
# the container's id: .../containers/<64 hex>/hostname
_MOUNTINFO_ID = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\b")


class PlacementError(ValueError):
    """The console cannot wire model containers to itself; the message says what to change."""


@dataclass(frozen=True)
class SelfMount:
    """One mount of the console's own container: `destination` inside, `source` on the host."""

    source: str
    destination: str


@dataclass(frozen=True)
class SelfContainer:
    id: str
    name: str
    mounts: tuple[SelfMount, ...]
    networks: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    models_source: str  # host path mounted read-only at /models in every model container
    hf_cache_source: str  # host path of the HF cache (vLLM)
    network: Optional[str]  # model containers join it
    probe_by_name: bool  # reach models at http://<container name>:<port>, else at loopback:<host port>
    publish_host: Optional[str]  # interface of the models' host ports; None: no host ports
    in_container: bool = False
    reach: Optional[str] = None  # a remote host's address: its ingress is reached there

    def describe(self) -> str:
        if self.reach:
            return f"models on a remote engine, reached at {self.reach}; models dir {self.models_source} there"
        where = "in a container" if self.in_container else "on the host"
        where += "" if self.probe_by_name or not self.in_container else " on the host's network"
        reach = (f"models on network {self.network}, reached by container name" if self.probe_by_name
                 else "models reached on loopback ports")
        ports = f"host ports on {self.publish_host}" if self.publish_host else "no host ports"
        return f"console {where}; {reach}; {ports}; models dir from {self.models_source}"


def container_id_from_mountinfo(text: str) -> Optional[str]:
    """This container's id, read from /proc/self/mountinfo; None outside a container."""
    m = _MOUNTINFO_ID.search(text)
    return m.group(1) if m else None


def own_container_candidates() -> list[str]:
    """Ids this process's container may have, best first; empty on a plain host. Only the
    engine can tell whether one of them is really this console's container (`resolve`)."""
    found: list[str] = []
    try:
        with open("/proc/self/mountinfo") as f:
            cid = container_id_from_mountinfo(f.read())
        if cid:
            found.append(cid)
    except OSError:
        pass
    if found or os.path.exists("/.dockerenv"):
        found.append(socket.gethostname())  # Docker's default hostname: the short id
    return found


def host_path(path: Path, mounts: Sequence[SelfMount]) -> Optional[str]:
    """The host path behind `path` inside the container (the deepest mount that holds it), or
    None when it lies in the container's own filesystem."""
    target = PurePosixPath(os.path.normpath(str(path)))
    best: Optional[tuple[PurePosixPath, SelfMount]] = None
    for m in mounts:
        dest = PurePosixPath(m.destination)
        if (target == dest or dest in target.parents) and (best is None or len(dest.parts) > len(best[0].parts)):
            best = (dest, m)
    if best is None:
        return None
    dest, m = best
    return str(PurePosixPath(m.source) / target.relative_to(dest))


def decide(settings: Settings, me: Optional[SelfContainer]) -> Placement:
    """How model containers reach their files and the console reaches them, or PlacementError.
    `me`: the console's own container on this engine; None when it runs on the host (or in a
    container this engine does not know, e.g. one with an engine of its own inside: then the
    engine's host is this console's host, as on bare metal)."""
    if me is None:
        if settings.models_host_dir and settings.models_host_dir != settings.models_dir:
            raise PlacementError(
                f"CORTEX_MODELS_HOST_DIR={settings.models_host_dir} differs from CORTEX_MODELS_DIR="
                f"{settings.models_dir}, but the console runs on the engine's host and sees its paths: "
                "unset CORTEX_MODELS_HOST_DIR (it is for a console in a container)")
        if settings.publish_host is None:
            raise PlacementError("CORTEX_PUBLISH_HOST=none leaves a console on the host no way to reach its "
                                 "models; publish on 127.0.0.1 (the default)")
        return Placement(str(settings.models_dir), str(settings.hf_cache_dir), settings.docker_network,
                         probe_by_name=False, publish_host=settings.publish_host)
    host_network = "host" in me.networks  # --network host: the host's loopback is the console's
    if not settings.docker_network and not host_network:
        raise PlacementError("the console runs in a container, so it reaches its models over a Docker network: "
                             "set CORTEX_DOCKER_NETWORK (the image sets cortex)")
    if host_network and settings.publish_host is None:
        raise PlacementError("the console uses the host's network, so it reaches models on their published "
                             "ports: unset CORTEX_PUBLISH_HOST=none")
    models = host_path(settings.models_dir, me.mounts)
    if models is None:
        hint = f"-v {settings.models_host_dir}:{settings.models_dir}:ro" if settings.models_host_dir else \
            f"-v /srv/models:{settings.models_dir}:ro (any host folder)"
        raise PlacementError(f"CORTEX_MODELS_DIR={settings.models_dir} is inside the console's container, where "
                             f"model containers cannot see it; mount a host folder there: {hint}")
    if settings.models_host_dir and PurePosixPath(models) != PurePosixPath(settings.models_host_dir):
        raise PlacementError(f"CORTEX_MODELS_HOST_DIR={settings.models_host_dir}, but CORTEX_MODELS_DIR="
                             f"{settings.models_dir} is mounted from {models}; mount "
                             f"{settings.models_host_dir} there, or unset CORTEX_MODELS_HOST_DIR")
    hf_cache = host_path(settings.hf_cache_dir, me.mounts)
    if hf_cache is None:
        raise PlacementError(f"CORTEX_DATA_DIR={settings.data_dir} is not a volume or a host folder; mount one "
                             f"there (-v cortex-data:{settings.data_dir}) so data outlives the container")
    return Placement(models, hf_cache, settings.docker_network, probe_by_name=not host_network,
                     publish_host=settings.publish_host, in_container=True)


def publish_interface(address: str) -> str:
    """Where another host publishes its ingress's port: on `address` when that is an IP address
    (that interface only), else on every interface of that machine."""
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return "0.0.0.0"  # a name: whichever interface it resolves to


def remote(settings: Settings, *, address: str, models_dir: Optional[str], hf_cache_dir: Optional[str],
           network: str) -> Placement:
    """Another machine's engine (hosts.py): its models join `network`, that machine's own, and
    publish no port; the console reaches them through that host's ingress (cortex_app/ingress),
    at `address`. Their files are that machine's folders (by default the same paths as the
    console's own)."""
    if not address:
        raise PlacementError("this host has no address its models can be reached at; remove it and add it again "
                             "with one")
    return Placement(models_dir or str(settings.models_dir), hf_cache_dir or str(settings.hf_cache_dir),
                     network=network, probe_by_name=False, publish_host=None, reach=address.strip("[]"))


def resolve(settings: Settings, runtime) -> Placement:
    """Find this console's container (if any), decide, and join the shared network. Needs the
    engine (EngineUnreachable propagates); PlacementError when the wiring cannot work."""
    me = None
    for cid in own_container_candidates():
        me = runtime.self_container(cid)
        if me is not None:
            break
    placement = decide(settings, me)
    if placement.network:
        runtime.ensure_network(placement.network)
        if placement.probe_by_name and placement.network not in me.networks:
            runtime.connect_network(placement.network, me.id)
    return placement
