"""How much memory a llama.cpp model will take, before it starts: from the GGUF's own header
(walked here; the `gguf` package, imported only here, gives the tensor types' sizes) and the
model's settings.

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
  token (fitted to llama.cpp build 11669's reports: within 2 % of them in the integration test,
  7 % at worst by hand, the test model without flash attention);
  without it, the attention scores as well: context x micro-batch x heads in f32.
It leaves out what llama.cpp does not report as its own: the CUDA context (a few hundred MiB
per GPU), which the fit check adds as a margin."""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from cortex_app.engines import vllm_memory

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

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    context_length: int  # trained context: llama-server's context when none is set
    weights_bytes: int  # every tensor (the token embeddings are the rest: kept in host memory)
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
    """The header of `path` (a file under the models dir). Cached per path, size and mtime,
    failures too: the detail page asks every second."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise GgufUnreadable(f"cannot read {path.name}: {exc.strerror}") from None
    got = _read(str(path), st.st_size, st.st_mtime_ns)
    if isinstance(got, str):
        raise GgufUnreadable(got)
    return got


# GGUF value types (gguf.GGUFValueType): fixed sizes as struct formats; 8 string, 9 array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
MAX_LAYERS = 4096
_WANTED = ("general.architecture", ".block_count", ".embedding_length", ".feed_forward_length",
           ".attention.head_count", ".attention.head_count_kv", ".attention.key_length",
           ".attention.value_length", ".context_length")


class _Header:
    """Walks a GGUF header in the file's mapping: the metadata it needs and every tensor's
    type and shape, stepping over the rest (a 150k-token vocabulary costs a pass over its
    lengths, not a parse: the gguf package's reader takes seconds on one)."""

    def __init__(self, buf) -> None:
        self.buf, self.at = buf, 0

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.buf, self.at)[0]
        self.at += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        n = self.take("Q")
        if n > len(self.buf) - self.at:
            raise ValueError("a string runs past the end of the file")
        self.at += n
        return bytes(self.buf[self.at - n:self.at]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.take("Q")
        self.at += n
        if self.at > len(self.buf):
            raise ValueError("a string runs past the end of the file")

    def value(self, kind: int, keep: bool):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == 8:
            return self.string() if keep else self.skip_string()
        if kind == 9:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALARS and not keep:
                self.at += count * struct.calcsize("<" + _SCALARS[item])
                return None
            if count > len(self.buf):
                raise ValueError("an array longer than the file")
            values = [self.value(item, keep) for _ in range(count)]
            return values if keep else None
        raise ValueError(f"unknown metadata type {kind}")


@lru_cache(maxsize=64)
def _read(path: str, size: int, mtime_ns: int):
    """GgufFacts, or why not (a string: a failure is cached as well)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    name = Path(path).name
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            h = _Header(buf)
            if bytes(buf[:4]) != b"GGUF":
                return f"{name} is not a GGUF file"
            h.at = 4
            version, n_tensors, n_kv = h.take("I"), h.take("Q"), h.take("Q")
            if version not in (2, 3) or n_tensors > size or n_kv > size:
                return f"{name}: a GGUF header this estimate cannot read (version {version})"
            meta = {}
            for _ in range(n_kv):
                key = h.string()
                kind = h.take("I")
                keep = key.endswith(_WANTED)
                value = h.value(kind, keep)
                if keep:
                    meta[key] = value
            tensors = []
            for _ in range(n_tensors):
                tname = h.string()
                dims = [h.take("Q") for _ in range(h.take("I"))]
                ttype = h.take("I")
                h.take("Q")  # offset
                block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
                tensors.append((tname, math.prod(dims) // block * nbytes))
    except (OSError, ValueError, struct.error, KeyError) as exc:
        return f"{name} is not a readable GGUF file ({exc})"
    arch = meta.get("general.architecture")
    if not arch:
        return f"{name} names no architecture"

    def get(key: str, default=None):
        return meta.get(f"{arch}.{key}", default)

    try:
        n_layer, n_embd, n_head = _one(get("block_count", 0)), _one(get("embedding_length", 0)), \
            _one(get("attention.head_count", 0))
        n_ff = _one(get("feed_forward_length", 0))
        n_head_kv = _one(get("attention.head_count_kv", n_head))
        head_k = _one(get("attention.key_length", n_embd // n_head if n_head else 0))
        head_v = _one(get("attention.value_length", head_k))
        ctx = _one(get("context_length", 0))
    except (TypeError, ValueError):
        return f"{name}: the {arch} metadata is not what an estimate reads"
    if not (0 < n_layer <= MAX_LAYERS and n_embd > 0 and n_head > 0):
        return f"{name}: the {arch} metadata lacks layers, width or heads"
    blocks = [0] * n_layer
    total = out = 0
    for tname, n in tensors:
        total += n
        if tname.startswith("blk."):
            index = tname.split(".", 2)[1]
            if index.isdigit() and int(index) < n_layer:
                blocks[int(index)] += n
        elif not tname.startswith("token_embd"):
            out += n
    return GgufFacts(n_layer, n_embd, n_ff, n_head, n_head_kv, head_k, head_v, ctx, total, tuple(blocks), out)


def estimate_llamacpp(facts: GgufFacts, *, n_ctx: Optional[int], gpu_layers: Optional[int], on_gpu: bool,
                      cache_type_k: Optional[str] = None, cache_type_v: Optional[str] = None,
                      flash_attn: Optional[bool] = None) -> Estimate:
    """The memory llama-server will allocate for this model on its device (pure).
    `n_ctx` None or 0: the trained context (llama-server's default). `gpu_layers` None: all;
    0 on a GPU device: nothing is offloaded, so the estimate is of host memory."""
    ctx = n_ctx or facts.context_length or 4096
    if on_gpu and gpu_layers is not None and gpu_layers <= 0:
        on_gpu = False
    if on_gpu:
        ngl = facts.n_layer + 1 if gpu_layers is None else min(gpu_layers, facts.n_layer + 1)
        layers = range(facts.n_layer - min(ngl, facts.n_layer), facts.n_layer)  # llama.cpp offloads the last ones
        weights = sum(facts.block_bytes[i] for i in layers) + (facts.output_bytes if ngl > facts.n_layer else 0)
        kv_layers = len(layers)
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


def estimate_model(model, models_dir: Path, hf_cache_dir: Optional[Path] = None):
    """The estimate for a model row as it is configured (what the form, the detail page, the
    API and the fit check at Start use): an Estimate for llama.cpp, a VllmEstimate for vLLM.
    A ValueError (GgufUnreadable, VllmUnreadable) says why there is none."""
    if model.engine.value == "vllm":
        folder = vllm_memory.model_folder(model.source, models_dir, hf_cache_dir or models_dir)
        return vllm_memory.estimate_vllm(vllm_memory.read_facts(folder, model.dtype),
                                         tensor_parallel=model.tensor_parallel_size,
                                         utilization=model.gpu_memory_utilization, max_model_len=model.max_model_len)
    facts = read_gguf(models_dir / model.source)
    return estimate_llamacpp(facts, n_ctx=model.context_size, gpu_layers=model.gpu_layers,
                             on_gpu=model.device.value == "cuda", cache_type_k=model.cache_type_k,
                             cache_type_v=model.cache_type_v, flash_attn=model.flash_attn)
