"""How much GPU memory a vLLM model needs, from its own files: `config.json` (layers, heads,
the KV width, the dtype) and the weight files' sizes, plus `gpu_memory_utilization`.

vLLM does not size itself to the model: at start it claims that share of each of its GPUs'
memory (0.9 by default) and refuses to start when the GPU has less free. Within the share go
the weights (split over the tensor-parallel GPUs), the activations of a profiling run, and
the KV cache, which takes whatever is left and must hold at least one sequence of
`max_model_len` tokens. So there are two questions: does each GPU have the share free, and
does the model fit in the share. Pure once the files are read; no torch, no transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cortex_app.engines.vllm import is_hf_repo, local_path

MIB = 1024 * 1024
DEFAULT_UTILIZATION = 0.9
ACTIVATIONS_MIB = 1024  # vLLM's profiling run and CUDA graphs, roughly, on top of the weights
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8_e4m3fn": 1}


class VllmUnreadable(ValueError):
    """Why there is no estimate (no config.json yet, an unreadable one)."""


@dataclass(frozen=True)
class VllmFacts:
    layers: int
    kv_heads: int
    head_dim: int
    max_positions: int
    dtype_bytes: int
    weights_bytes: int


@dataclass(frozen=True)
class VllmEstimate:
    weights_mib: float  # per GPU
    kv_mib: float  # per GPU: one sequence of max_model_len tokens
    activations_mib: float
    utilization: float
    gpus: int  # tensor-parallel size
    max_model_len: int

    @property
    def need_mib(self) -> float:
        """What must fit in the share vLLM claims on each GPU."""
        return self.weights_mib + self.kv_mib + self.activations_mib

    def summary(self) -> str:
        return (f"vLLM claims {self.utilization:.0%} of each of its {self.gpus} GPU(s); within that it needs "
                f"~{self.need_mib:,.0f} MiB per GPU: weights {self.weights_mib:,.0f}, KV cache for one "
                f"{self.max_model_len:,}-token sequence {self.kv_mib:,.0f}, activations ~{self.activations_mib:,.0f}")


def model_folder(source: str, models_dir: Path, hf_cache_dir: Path) -> Path:
    """Where the model's files are: a folder under the models dir, or the newest snapshot in
    the Hugging Face cache (VllmUnreadable when it has not been downloaded yet)."""
    if not is_hf_repo(source):
        return models_dir / local_path(source)
    repo = hf_cache_dir / "hub" / ("models--" + source.replace("/", "--"))
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
    if not snapshots:
        raise VllmUnreadable(f"{source} is not in the Hugging Face cache yet (vLLM downloads it at the first start)")
    return snapshots[-1]


def read_facts(folder: Path, dtype: Optional[str] = None) -> VllmFacts:
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise VllmUnreadable(f"no config.json in {folder.name}") from None
    except (OSError, ValueError) as exc:
        raise VllmUnreadable(f"cannot read {folder.name}/config.json: {exc}") from None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    get = lambda key, default=None: config.get(key, text.get(key, default))  # noqa: E731
    try:
        layers = int(get("num_hidden_layers"))
        heads = int(get("num_attention_heads"))
        kv_heads = int(get("num_key_value_heads") or heads)
        head_dim = int(get("head_dim") or int(get("hidden_size")) // heads)
    except (TypeError, ValueError, ZeroDivisionError):
        raise VllmUnreadable(f"{folder.name}/config.json lacks num_hidden_layers, num_attention_heads or "
                             "hidden_size") from None
    stored = str(get("torch_dtype") or get("dtype") or "bfloat16").lower().removeprefix("torch.")
    wanted = (dtype or "auto").lower()
    if wanted == "auto":
        # vLLM's "auto" runs a float32 checkpoint in 16 bits.
        wanted = "float16" if stored in ("float32", "float") else stored
    weights = weight_bytes(folder)
    if weights == 0:
        raise VllmUnreadable(f"no weight files (.safetensors, .bin) in {folder.name}")
    stored_bytes = DTYPE_BYTES.get(stored, 2)
    if stored_bytes > 1 and DTYPE_BYTES.get(wanted, 2) < stored_bytes:
        weights = weights * DTYPE_BYTES.get(wanted, 2) // stored_bytes  # cast when loaded
    return VllmFacts(layers, kv_heads, head_dim, int(get("max_position_embeddings") or 4096),
                     DTYPE_BYTES.get(wanted, 2), weights)


def weight_bytes(folder: Path) -> int:
    """The bytes vLLM loads: the files a safetensors index names; else the .safetensors files;
    else the .bin ones; else .pt/.pth. A folder holding one checkpoint in two formats (or
    training leftovers such as optimizer.pt) counts once."""
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            names = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            continue
        if names and all((folder / n).is_file() for n in names):
            return sum((folder / n).stat().st_size for n in names)
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    for suffixes in ((".safetensors",), (".bin",), (".pt", ".pth")):
        found = [p for p in files if p.suffix in suffixes and not p.name.startswith(("training_args", "optimizer"))]
        if found:
            return sum(p.stat().st_size for p in found)
    return 0


def estimate_vllm(facts: VllmFacts, *, tensor_parallel: Optional[int], utilization: Optional[float],
                  max_model_len: Optional[int]) -> VllmEstimate:
    tp = max(1, tensor_parallel or 1)
    length = max_model_len or facts.max_positions
    # K and V per GPU: the KV heads are split over the GPUs, and copied when there are fewer than GPUs.
    kv = 2 * facts.layers * max(1.0, facts.kv_heads / tp) * facts.head_dim * facts.dtype_bytes * length
    return VllmEstimate(facts.weights_bytes / tp / MIB, kv / MIB, ACTIVATIONS_MIB,
                        utilization or DEFAULT_UTILIZATION, tp, length)
