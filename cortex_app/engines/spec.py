"""ContainerSpec: everything Cortex tells Docker about one model's container, as plain data.

Built by the pure per-engine functions (llamacpp.py, vllm.py) from a model row; turned into
SDK calls only by runtime/docker.py. `spec_hash` covers every field that changes the running
container, so a config edit shows up as a different hash (the container is then stale).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Optional

from cortex_app.models import Model

LABEL_MANAGED = "cortex.managed"
LABEL_MODEL_ID = "cortex.model-id"
LABEL_MODEL_NAME = "cortex.model-name"
LABEL_ENGINE = "cortex.engine"
LABEL_SPEC_HASH = "cortex.spec-hash"
LABEL_INSTANCE = "cortex.instance"  # set by the runtime: which install a container belongs to
LABEL_HOST = "cortex.host-id"  # the host row it was made for (none: host 1, as before hosts)
LABEL_SAMPLER = "cortex.gpu-sampler"  # a remote host's GPU sampler (gpu_samplers.py): no model's container
LABEL_INGRESS = "cortex.ingress"  # a remote host's ingress (cortex_app/ingress): no model's container
LABEL_INGRESS_CONFIG = "cortex.ingress-config"  # what it was made with (config, CA, address), hashed

# Where the models dir is mounted inside every engine container (read-only).
MODELS_MOUNT = "/models"
# Interface the model's port is published on. Loopback: models are reached through the
# console (and later its gateway), never directly from the network.
PUBLISH_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool


@dataclass(frozen=True)
class GpuRequest:
    """An NVIDIA device request: the listed GPU indices, or every GPU when `device_ids` is None."""

    device_ids: Optional[tuple[str, ...]] = None


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    args: tuple[str, ...]
    # Values may be secrets (HF token): repr=False keeps them out of any log of the spec.
    env: dict[str, str] = field(repr=False)
    container_port: int
    mounts: tuple[Mount, ...] = ()
    gpus: Optional[GpuRequest] = None
    shm_size: Optional[str] = None
    ipc_mode: Optional[str] = None
    init: bool = True
    restart_policy: str = "no"  # the whole point: Docker never brings a model back by itself
    model_id: int = 0
    model_name: str = ""
    engine: str = ""
    network: Optional[str] = None  # a Docker network shared with the console (hosting.py)
    # Hardening, from the console's settings (engines/__init__.py): see Settings.
    no_new_privileges: bool = False
    pids_limit: Optional[int] = None
    host_id: int = 1  # the host row it is made for (hosts.py)

    @property
    def spec_hash(self) -> str:
        body = asdict(self)
        body["env"] = sorted(self.env.items())
        if body["network"] is None:
            del body["network"]  # containers made before networks existed keep their hash
        if body["host_id"] == 1:
            del body["host_id"]  # and those made before hosts existed too
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_MODEL_ID: str(self.model_id),
            LABEL_MODEL_NAME: self.model_name,
            LABEL_ENGINE: self.engine,
            LABEL_SPEC_HASH: self.spec_hash,
            LABEL_HOST: str(self.host_id),
        }


def container_prefix(model_id: int) -> str:
    """How every container Cortex makes for that model row begins, whatever its name was then."""
    return f"cortex-model-{model_id}-"


def container_name(model: Model) -> str:
    """Deterministic, and unique per model row (the id), readable (the name)."""
    return container_prefix(model.id) + model.name


def model_spec(model: Model, *, engine: str, args: list[str], env: dict[str, str], port: int,
               mounts: tuple[Mount, ...], gpus: Optional[GpuRequest], **extra) -> ContainerSpec:
    """What every engine's spec shares: name, image, the admin's extra flags after the
    console's, the admin's extra env under the console's (which wins), the model's identity."""
    return ContainerSpec(
        name=container_name(model),
        image=model.image,
        args=tuple(args + list(model.extra_args or [])),
        env={**(model.extra_env or {}), **env},
        container_port=port,
        mounts=mounts,
        gpus=gpus,
        model_id=model.id or 0,
        model_name=model.name,
        engine=engine,
        host_id=model.host_id or 1,
        **extra,
    )


def gpu_env_and_request(model: Model) -> tuple[dict[str, str], Optional[GpuRequest]]:
    if model.device != "cuda":
        # The NVIDIA runtime reads `void` as "no GPU": a CPU model never sees one, even on an
        # engine whose default runtime is nvidia or with an image that asks for all GPUs.
        return {"NVIDIA_VISIBLE_DEVICES": "void"}, None
    if model.gpu_ids is None:
        return {"NVIDIA_VISIBLE_DEVICES": "all"}, GpuRequest()
    ids = tuple(str(i) for i in model.gpu_ids)
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(ids)}, GpuRequest(device_ids=ids)


def flag(args: list[str], name: str, value: object) -> None:
    """Append `name value` unless value is None."""
    if value is not None:
        args += [name, str(value)]


def switch(args: list[str], name: str, on: Optional[bool]) -> None:
    if on:
        args.append(name)
