"""Pure spec building: a model row (plus where its files live) -> ContainerSpec."""

from __future__ import annotations

from cortex_app.engines import llamacpp, vllm
from cortex_app.engines.spec import ContainerSpec
from cortex_app.models import Engine, Model
from cortex_app.settings import Settings


def build_spec(model: Model, settings: Settings) -> ContainerSpec:
    if model.engine == Engine.LLAMACPP:
        return llamacpp.build(model, str(settings.models_dir))
    if model.engine == Engine.VLLM:
        return vllm.build(model, str(settings.models_dir), str(settings.hf_cache_dir))
    raise ValueError(f"unknown engine {model.engine!r}")

