"""The fit check's decisions (cortex_app/fit.py), case by case, with the numbers it gives."""

import pytest

from cortex_app.engines.memory import Estimate
from cortex_app.engines.vllm_memory import VllmEstimate
from cortex_app.fit import CUDA_CONTEXT_MIB, GpuRoom, fit

H100 = 81_559


def gpus(*free: int) -> list[GpuRoom]:
    return [GpuRoom(i, "H100", H100, f) for i, f in enumerate(free)]


LLAMA_20G = Estimate(weights_mib=18_000, kv_mib=1_500, compute_mib=500, n_ctx=8192, on_gpu=True)  # 20,000 MiB


@pytest.mark.parametrize("free, chosen, ok, words", [
    ((40_000,), None, True, "fits: ~20,512 MiB needed, 40,000 MiB free"),
    ((20_000,), None, False, "needs ~20,512 MiB of GPU memory"),
    ((20_000,), None, False, "512 MiB short"),
    ((10_000, 11_100), None, True, "fits: ~21,024 MiB needed, 21,100 MiB free"),  # spread over both
    ((10_000, 11_100), [1], False, "GPU 1: 11,100 MiB free of 81,559 MiB"),
    ((40_000,), [3], False, "GPU 3 is not on this host (it has 0)"),
])
def test_llama_cpp_needs_its_estimate_and_a_cuda_context_per_gpu(free, chosen, ok, words):
    verdict = fit(LLAMA_20G, gpus(*free), chosen)
    assert verdict.ok is ok and words in verdict.reason, verdict.reason


def vllm(weights=2_400, kv=1_024, tp=1, util=0.9) -> VllmEstimate:
    return VllmEstimate(weights_mib=weights, kv_mib=kv, activations_mib=1_024, utilization=util, gpus=tp,
                        max_model_len=8192)


@pytest.mark.parametrize("estimate, free, chosen, ok, words", [
    (vllm(), (81_559,), None, True, "fits: vLLM claims 73,403 MiB"),
    (vllm(), (60_000,), None, False, "vLLM claims 90% of GPU 0 (73,403 MiB of 81,559 MiB), which has 60,000 MiB free"),
    (vllm(util=0.5), (60_000,), None, True, "fits"),
    (vllm(tp=2), (81_559,), None, False, "tensor parallel size 2 needs 2 GPUs; it may use 1"),
    (vllm(tp=2), (81_559, 81_559, 1_000), [0, 1], True, "fits: vLLM claims 146,806 MiB"),
    (vllm(weights=80_000), (81_559,), None, False, "more than vLLM's share of GPU 0 (73,403 MiB)"),
])
def test_vllm_needs_its_share_free_and_the_model_within_it(estimate, free, chosen, ok, words):
    verdict = fit(estimate, gpus(*free), chosen)
    assert verdict.ok is ok and words in verdict.reason, verdict.reason


def test_the_cuda_context_margin_is_what_the_numbers_say():
    tight = LLAMA_20G.total_mib + CUDA_CONTEXT_MIB
    assert fit(LLAMA_20G, gpus(int(tight)), None).ok
    assert not fit(LLAMA_20G, gpus(int(tight) - 1), None).ok
