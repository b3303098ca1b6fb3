"""How much memory a llama.cpp model will take, before it starts: from the GGUF's own metadata
(the one module that imports the `gguf` package) and the model's settings.

What llama-server allocates, and how each part is estimated (checked against its own report,
`-lv 4`: "model buffer size", "KV buffer size", "compute buffer size", for the test model and
generated GGUFs of other shapes in tests/integration/test_memory_estimate.py):
- weights: every tensor's bytes as stored (any type, quantized or not). On a GPU the token
  embeddings stay in host memory (llama.cpp keeps its input layer on the CPU), and only the
  offloaded layers' tensors count (-ngl; the output layer once every block is offloaded).
- KV cache: context cells x layers x (K width + V width) x the cache type's bytes per value;
  the cells are the whole context, shared by the parallel slots.
- compute buffer (llama.cpp's graph, sized for a micro-batch of min(512, context) tokens):
  with flash attention (llama.cpp's default where the device has it) the attention mask,
  context x micro-batch in f16, plus about 3 x feed-forward + 4 x embedding + 96 floats per
  token (fitted to llama.cpp build 11669's reports; within 4 % of them on the shapes tested);
  without it, the attention scores as well: context x micro-batch x heads in f32.
It leaves out what llama.cpp does not report as its own: the CUDA context (a few hundred MiB
per GPU), which the fit check adds as a margin."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

MIB = 1024 * 1024
UBATCH = 512  # llama-server's default micro-batch
# Bytes per value of each KV cache type (block types: block bytes / values per block).
CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
               "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}


class GgufUnreadable(ValueError):
    """The file is not a GGUF this estimate can read (said to the admin as is)."""


@dataclass(frozen=True)
class GgufFacts:
    """What the estimate needs from a GGUF's header."""

    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    context_length: int  # trained context: llama-server's context when none is set
    weights_bytes: int  # every tensor
    input_bytes: int  # token embeddings (kept in host memory)
    block_bytes: tuple[int, ...]  # per layer
    output_bytes: int  # output norm and head


@dataclass(frozen=True)
class Estimate:
    weights_mib: float
    kv_mib: float
    compute_mib: float
    n_ctx: int
    on_gpu: bool

    @property
    def total_mib(self) -> float:
        return self.weights_mib + self.kv_mib + self.compute_mib

    def summary(self) -> str:
        where = "GPU memory" if self.on_gpu else "memory"
        return (f"~{self.total_mib:,.0f} MiB of {where}: weights {self.weights_mib:,.0f}, KV cache "
                f"{self.kv_mib:,.0f} ({self.n_ctx:,} tokens), compute {self.compute_mib:,.0f}")


def _one(value) -> int:
    """A per-layer array (some architectures vary it by layer) counts at its largest."""
    if isinstance(value, (list, tuple)):
        return int(max(value)) if value else 0
    return int(value)


def read_gguf(path: Path) -> GgufFacts:
    """The header of `path` (a file under the models dir). Cached per path, size and mtime:
    the token list of a large vocabulary takes a second to parse."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise GgufUnreadable(f"cannot read {path.name}: {exc.strerror}") from None
    return _read(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _read(path: str, size: int, mtime_ns: int) -> GgufFacts:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - the package raises plain errors for a bad file
        raise GgufUnreadable(f"{Path(path).name} is not a readable GGUF file ({exc})") from None

    def get(key: str, default=None):
        field = reader.fields.get(key)
        return field.contents() if field is not None else default

    arch = get("general.architecture")
    if not arch:
        raise GgufUnreadable(f"{Path(path).name} names no architecture")
    try:
        n_layer = _one(get(f"{arch}.block_count"))
        n_embd = _one(get(f"{arch}.embedding_length"))
        n_head = _one(get(f"{arch}.attention.head_count"))
        n_ff = _one(get(f"{arch}.feed_forward_length", 0))
        n_head_kv = _one(get(f"{arch}.attention.head_count_kv", n_head))
        head_k = _one(get(f"{arch}.attention.key_length", n_embd // n_head if n_head else 0))
        head_v = _one(get(f"{arch}.attention.value_length", head_k))
        ctx = _one(get(f"{arch}.context_length", 0))
    except (TypeError, ValueError):
        raise GgufUnreadable(f"{Path(path).name}: the {arch} metadata is incomplete") from None
    if not (n_layer and n_embd and n_head):
        raise GgufUnreadable(f"{Path(path).name}: the {arch} metadata lacks layers, width or heads")
    blocks = [0] * n_layer
    total = inp = out = 0
    for t in reader.tensors:
        n = int(t.n_bytes)
        total += n
        if t.name.startswith("blk."):
            i = int(t.name.split(".", 2)[1])
            if 0 <= i < n_layer:
                blocks[i] += n
        elif t.name.startswith("token_embd"):
            inp += n
        else:
            out += n
    return GgufFacts(arch, n_layer, n_embd, n_ff, n_head, n_head_kv, head_k, head_v, ctx, total, inp,
                     tuple(blocks), out)


def estimate_llamacpp(facts: GgufFacts, *, n_ctx: Optional[int], gpu_layers: Optional[int], on_gpu: bool,
                      cache_type_k: Optional[str] = None, cache_type_v: Optional[str] = None,
                      flash_attn: Optional[bool] = None) -> Estimate:
    """The memory llama-server will allocate for this model on its device (pure).
    `n_ctx` None or 0: the trained context (llama-server's default). `gpu_layers` None: all."""
    ctx = n_ctx or facts.context_length or 4096
    if on_gpu:
        ngl = facts.n_layer + 1 if gpu_layers is None else max(0, min(gpu_layers, facts.n_layer + 1))
        layers = range(facts.n_layer - min(ngl, facts.n_layer), facts.n_layer)  # llama.cpp offloads the last ones
        weights = sum(facts.block_bytes[i] for i in layers) + (facts.output_bytes if ngl > facts.n_layer else 0)
        kv_layers = len(layers)
        if ngl == 0:
            return Estimate(0.0, 0.0, 0.0, ctx, True)
    else:
        weights, kv_layers = facts.weights_bytes, facts.n_layer
    k_bytes = CACHE_BYTES.get(cache_type_k or "f16", 2.0)
    v_bytes = CACHE_BYTES.get(cache_type_v or "f16", 2.0)
    kv = ctx * kv_layers * facts.n_head_kv * (facts.head_dim_k * k_bytes + facts.head_dim_v * v_bytes)
    ubatch = min(UBATCH, ctx)
    compute = ctx * ubatch * 2 + ubatch * 4 * (3 * facts.n_ff + 4 * facts.n_embd + 96)
    if flash_attn is False and (cache_type_v or "f16") in ("f16", "f32", "bf16"):  # a quantized V forces it on
        compute += ctx * ubatch * facts.n_head * 4
    return Estimate(weights / MIB, kv / MIB, compute / MIB, ctx, on_gpu)


def estimate_model(model, models_dir: Path) -> Estimate:
    """The estimate for a model row as it is configured (what the detail page and the API
    show). GgufUnreadable (a ValueError) says why there is none."""
    if model.engine.value != "llamacpp":
        raise GgufUnreadable("estimates cover llama.cpp models (GGUF) so far")
    facts = read_gguf(models_dir / model.source)
    return estimate_llamacpp(facts, n_ctx=model.context_size, gpu_layers=model.gpu_layers,
                             on_gpu=model.device.value == "cuda", cache_type_k=model.cache_type_k,
                             cache_type_v=model.cache_type_v, flash_attn=model.flash_attn)
