"""Pure: does a model fit on the GPUs it would get, with the numbers either way.

The estimate comes from engines/memory.py (llama.cpp: what llama-server will allocate) or
engines/vllm_memory.py (vLLM: the share of each GPU it claims, and what must fit in it); the
GPUs' free memory from NVML (runtime/gpu.py). Start refuses a model that does not fit, unless
an admin overrides that once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from cortex_app.engines.memory import Estimate
from cortex_app.engines.vllm_memory import VllmEstimate

# What each GPU a process uses costs beyond what llama.cpp or vLLM count as their own: the
# CUDA context and its kernels (a few hundred MiB, more on newer GPUs and drivers).
CUDA_CONTEXT_MIB = 512


@dataclass(frozen=True)
class GpuRoom:
    index: int
    name: str
    total_mib: int
    free_mib: int


@dataclass(frozen=True)
class Fit:
    ok: bool
    reason: str  # with the numbers
    need_mib: float  # in all, over the GPUs it would use
    free_mib: float


def _mib(x: float) -> str:
    return f"{x:,.0f} MiB"


def _free_of(gpus: Sequence[GpuRoom]) -> str:
    return ", ".join(f"GPU {g.index}: {_mib(g.free_mib)} free of {_mib(g.total_mib)}" for g in gpus)


def fit(estimate, gpus: Sequence[GpuRoom], chosen: Optional[Sequence[int]]) -> Fit:
    """`chosen`: the model's GPU ids (None: every GPU of the host)."""
    known = {g.index for g in gpus}
    missing = sorted(set(chosen or ()) - known)
    if missing:
        return Fit(False, f"GPU {', '.join(map(str, missing))} is not on this host (it has "
                          f"{', '.join(map(str, sorted(known))) or 'none'})", 0, 0)
    pick = [g for g in gpus if chosen is None or g.index in chosen]
    if isinstance(estimate, VllmEstimate):
        return _fit_vllm(estimate, pick)
    return _fit_llamacpp(estimate, pick)


def _fit_llamacpp(e: Estimate, pick: Sequence[GpuRoom]) -> Fit:
    # llama.cpp spreads the offloaded layers over the GPUs it sees, by their free memory.
    need = e.total_mib + CUDA_CONTEXT_MIB * len(pick)
    free = sum(g.free_mib for g in pick)
    parts = (f"weights {_mib(e.weights_mib)}, KV cache {_mib(e.kv_mib)} for {e.n_ctx:,} tokens, compute "
             f"{_mib(e.compute_mib)}, CUDA context {_mib(CUDA_CONTEXT_MIB)} per GPU")
    if need > free:
        return Fit(False, f"it needs ~{_mib(need)} of GPU memory ({parts}), but {_free_of(pick)}: "
                          f"{_mib(need - free)} short", need, free)
    return Fit(True, f"fits: ~{_mib(need)} needed, {_mib(free)} free", need, free)


def _fit_vllm(e: VllmEstimate, pick: Sequence[GpuRoom]) -> Fit:
    if len(pick) < e.gpus:
        return Fit(False, f"tensor parallel size {e.gpus} needs {e.gpus} GPUs; it may use {len(pick)}", 0, 0)
    use = list(pick)[:e.gpus]  # vLLM takes the first ones it sees
    claims = {g.index: e.utilization * g.total_mib for g in use}
    need = sum(claims.values())
    free = sum(g.free_mib for g in use)
    short = [g for g in use if g.free_mib < claims[g.index]]
    if short:
        return Fit(False, "vLLM claims " + "; ".join(
            f"{e.utilization:.0%} of GPU {g.index} ({_mib(claims[g.index])} of {_mib(g.total_mib)}), which has "
            f"{_mib(g.free_mib)} free" for g in short)
            + ": lower gpu_memory_utilization, or free the GPU", need, free)
    small = [g for g in use if e.need_mib + CUDA_CONTEXT_MIB > claims[g.index]]
    if small:
        g = small[0]
        return Fit(False, f"the model needs ~{_mib(e.need_mib + CUDA_CONTEXT_MIB)} per GPU (weights "
                          f"{_mib(e.weights_mib)}, KV cache {_mib(e.kv_mib)} for one {e.max_model_len:,}-token "
                          f"sequence, activations ~{_mib(e.activations_mib)}, CUDA context {_mib(CUDA_CONTEXT_MIB)}),"
                          f" more than vLLM's share of GPU {g.index} ({_mib(claims[g.index])}): raise "
                          "gpu_memory_utilization, add GPUs (tensor parallel), or shorten max_model_len", need, free)
    return Fit(True, f"fits: vLLM claims {_mib(need)}, {_mib(free)} free", need, free)
