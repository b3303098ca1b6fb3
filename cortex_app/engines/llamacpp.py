"""llama.cpp (`llama-server`): a model row -> ContainerSpec. Pure.

The image's ENTRYPOINT is llama-server, so the spec's args are only its flags.
"""

from __future__ import annotations

from typing import Optional

from cortex_app.engines.spec import MODELS_MOUNT, ContainerSpec, Mount, flag, gpu_env_and_request, model_spec, switch
from cortex_app.models import Model

PORT = 8080
# Flags the console sets itself; extra args may not override them (validation refuses them).
CONTROLLED_FLAGS = frozenset({"-m", "--model", "--host", "--port", "-a", "--alias", "--api-key",
                              "--api-key-file", "-hf", "--hf-repo", "-mu", "--model-url"})


def controlled_flag(arg: str) -> Optional[str]:
    """The console-set flag llama-server would read `arg` as, or None. Its parser turns `_`
    into `-` in a `--` flag's name (`--api_key`); short flags and names match exactly."""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = name.replace("_", "-")
    return name if name in CONTROLLED_FLAGS else None


def build(model: Model, models_dir: str) -> ContainerSpec:
    env, gpus = gpu_env_and_request(model)
    args = ["-m", f"{MODELS_MOUNT}/{model.source}", "--host", "0.0.0.0", "--port", str(PORT),
            "--alias", model.served_name]
    flag(args, "-c", model.context_size)
    # CPU-only models offload nothing; on CUDA the default is every layer.
    gpu_layers = 0 if model.device == "cpu" else (model.gpu_layers if model.gpu_layers is not None else 999)
    flag(args, "-ngl", gpu_layers)
    flag(args, "--parallel", model.parallel_slots)
    flag(args, "-t", model.threads)
    if model.flash_attn is not None:
        args += ["--flash-attn", "on" if model.flash_attn else "off"]
    flag(args, "--cache-type-k", model.cache_type_k)
    flag(args, "--cache-type-v", model.cache_type_v)
    switch(args, "--embeddings", model.embeddings)
    args.append("--metrics")
    return model_spec(model, engine="llamacpp", args=args, env=env, port=PORT, gpus=gpus,
                      mounts=(Mount(models_dir, MODELS_MOUNT, read_only=True),))
