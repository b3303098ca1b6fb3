"""Pure spec building: a model row (plus where its files live) -> ContainerSpec."""

from __future__ import annotations

import dataclasses
from typing import Optional

from cortex_app.engines import llamacpp, vllm
from cortex_app.engines.spec import ContainerSpec
from cortex_app.hosting import Placement
from cortex_app.models import Engine, Model
from cortex_app.settings import Settings

CONTAINER_PORTS = {Engine.LLAMACPP: llamacpp.PORT, Engine.VLLM: vllm.PORT}


def build_spec(model: Model, settings: Settings, placement: Optional[Placement] = None) -> ContainerSpec:
    """The container for `model`. Mount sources are host paths: the placement's when the
    console runs in a container, else the console's own paths."""
    models_dir = placement.models_source if placement else str(settings.models_dir)
    hf_cache_dir = placement.hf_cache_source if placement else str(settings.hf_cache_dir)
    if model.engine == Engine.LLAMACPP:
        spec = llamacpp.build(model, models_dir)
    elif model.engine == Engine.VLLM:
        spec = vllm.build(model, models_dir, hf_cache_dir)
    else:
        raise ValueError(f"unknown engine {model.engine!r}")
    spec = dataclasses.replace(spec, no_new_privileges=settings.model_no_new_privileges,
                               pids_limit=settings.model_pids_limit or None)
    return dataclasses.replace(spec, network=placement.network) if placement and placement.network else spec
