"""vLLM (OpenAI server image): a model row -> ContainerSpec. Pure.

Source: a Hugging Face repo id (`org/name`, downloaded into the HF cache volume) or a
folder under the models dir written with a leading `./` or as a plain folder name
(`./org/name`, `my-model`), served offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import re
from typing import Optional

from cortex_app.engines.spec import MODELS_MOUNT, ContainerSpec, Mount, flag, gpu_env_and_request, model_spec, switch
from cortex_app.models import Model

PORT = 8000
HF_CACHE_MOUNT = "/root/.cache/huggingface"
SHM_SIZE = "8g"  # PyTorch/NCCL need a large /dev/shm; this is a limit, not an allocation
CONTROLLED_FLAGS = frozenset({"--model", "--host", "--port", "--served-model-name", "--api-key"})
HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def controlled_flag(arg: str) -> Optional[str]:
    """The console-set flag that vLLM's parser would read `arg` as, or None. Its parser turns
    `_` into `-` in a flag's name (`--served_model_name`), reads `--flag.key=v` and `--flag+`
    as JSON parts of `--flag`, and, being argparse, takes any unambiguous prefix of a flag
    (`--served-model`)."""
    if not arg.startswith("--"):
        return None
    name = arg.split("=", 1)[0].split(".", 1)[0].rstrip("+").replace("_", "-")
    if len(name) <= 2:
        return None
    return next((f for f in sorted(CONTROLLED_FLAGS) if f == name or f.startswith(name)), None)


def is_hf_repo(source: str) -> bool:
    return not source.startswith("./") and bool(HF_REPO_ID.match(source))


def local_path(source: str) -> str:
    return source[2:] if source.startswith("./") else source


def build(model: Model, models_dir: str, hf_cache_dir: str) -> ContainerSpec:
    env, gpus = gpu_env_and_request(model)
    if is_hf_repo(model.source):
        source_arg = model.source
        if model.hf_token:
            env |= {"HF_TOKEN": model.hf_token, "HUGGING_FACE_HUB_TOKEN": model.hf_token}
    else:
        source_arg = f"{MODELS_MOUNT}/{local_path(model.source)}"
        env["HF_HUB_OFFLINE"] = "1"
    args = ["--model", source_arg, "--host", "0.0.0.0", "--port", str(PORT),
            "--served-model-name", model.served_name]
    flag(args, "--tensor-parallel-size", model.tensor_parallel_size)
    flag(args, "--gpu-memory-utilization", model.gpu_memory_utilization)
    flag(args, "--dtype", model.dtype)
    flag(args, "--quantization", model.quantization)
    flag(args, "--max-model-len", model.max_model_len)
    flag(args, "--max-num-seqs", model.max_num_seqs)
    switch(args, "--enforce-eager", model.enforce_eager)
    switch(args, "--trust-remote-code", model.trust_remote_code)
    if model.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if model.enable_prefix_caching else "--no-enable-prefix-caching")
    return model_spec(model, engine="vllm", args=args, env=env, port=PORT, gpus=gpus, shm_size=SHM_SIZE,
                      mounts=(Mount(models_dir, MODELS_MOUNT, read_only=True),
                              Mount(hf_cache_dir, HF_CACHE_MOUNT, read_only=False)))
