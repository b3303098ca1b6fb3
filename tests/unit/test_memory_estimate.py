"""engines/memory.py's pure part: which bytes count on the GPU, the KV cache by type, the
compute buffer with and without flash attention. (Against llama-server's own report:
tests/integration/test_memory_estimate.py.)"""

import pytest

from cortex_app.engines.memory import MIB, GgufFacts, estimate_llamacpp

FACTS = GgufFacts(n_layer=4, n_embd=256, n_ff=768, n_head=8, n_head_kv=2, head_dim_k=32, head_dim_v=32,
                  context_length=4096, weights_bytes=100 * MIB,  # 20 of them token embeddings
                  block_bytes=(15 * MIB,) * 4, output_bytes=20 * MIB)


@pytest.mark.parametrize("gpu_layers, weights, kv_layers", [
    (None, 80, 4),  # everything but the token embeddings (llama.cpp keeps its input layer on the CPU)
    (999, 80, 4),
    (5, 80, 4),  # n_layer + 1: the output layer too
    (4, 60, 4),  # every block, not the output layer
    (1, 15, 1),  # the last block only
])
def test_on_a_gpu_only_the_offloaded_layers_count(gpu_layers, weights, kv_layers):
    e = estimate_llamacpp(FACTS, n_ctx=1024, gpu_layers=gpu_layers, on_gpu=True)
    assert e.weights_mib == weights
    assert e.kv_mib == 1024 * kv_layers * 2 * (32 * 2 + 32 * 2) / MIB


def test_no_layer_on_the_gpu_is_an_estimate_of_host_memory():
    e = estimate_llamacpp(FACTS, n_ctx=1024, gpu_layers=0, on_gpu=True)
    assert not e.on_gpu and e == estimate_llamacpp(FACTS, n_ctx=1024, gpu_layers=None, on_gpu=False)
    assert "of memory" in e.summary() and "GPU" not in e.summary()


def test_on_the_cpu_every_weight_counts_and_the_context_defaults_to_the_trained_one():
    e = estimate_llamacpp(FACTS, n_ctx=None, gpu_layers=None, on_gpu=False)
    assert e.weights_mib == 100 and e.n_ctx == 4096 and not e.on_gpu


@pytest.mark.parametrize("k, v, per_value", [(None, None, 2.0), ("q8_0", "q8_0", 34 / 32), ("f32", "q4_0", None)])
def test_kv_cache_bytes_follow_the_cache_types(k, v, per_value):
    e = estimate_llamacpp(FACTS, n_ctx=2048, gpu_layers=None, on_gpu=False, cache_type_k=k, cache_type_v=v)
    cells = 2048 * 4 * 2 * 32
    want = cells * (per_value * 2) if per_value else cells * (4 + 18 / 32)
    assert e.kv_mib == pytest.approx(want / MIB)


def test_without_flash_attention_the_scores_are_in_the_compute_buffer():
    on = estimate_llamacpp(FACTS, n_ctx=4096, gpu_layers=None, on_gpu=False)
    off = estimate_llamacpp(FACTS, n_ctx=4096, gpu_layers=None, on_gpu=False, flash_attn=False)
    assert off.compute_mib - on.compute_mib == 4096 * 512 * 8 * 4 / MIB
    # a quantized V cache makes llama.cpp turn flash attention on regardless
    q = estimate_llamacpp(FACTS, n_ctx=4096, gpu_layers=None, on_gpu=False, flash_attn=False, cache_type_v="q8_0")
    assert q.compute_mib == on.compute_mib
    # a context shorter than the micro-batch shrinks the micro-batch too
    short = estimate_llamacpp(FACTS, n_ctx=256, gpu_layers=None, on_gpu=False)
    assert short.compute_mib == (256 * 256 * 2 + 256 * 4 * (3 * 768 + 4 * 256 + 96)) / MIB


def test_odd_files_say_why_once_and_are_not_read_again(tmp_path):
    """A file that is not a GGUF, or a header cut short or absurd, is GgufUnreadable (a
    ValueError the pages show), and the answer is cached like a good one."""
    from cortex_app.engines import memory

    cases = {"text.gguf": b"hello, not a model" * 10,
             "cut.gguf": b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (1).to_bytes(8, "little")
             + (10 ** 12).to_bytes(8, "little"),  # a key claimed a terabyte long
             "v9.gguf": b"GGUF" + (9).to_bytes(4, "little") + bytes(16)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(memory.GgufUnreadable):
            memory.read_gguf(tmp_path / name)
        before = memory._read.cache_info().hits
        with pytest.raises(memory.GgufUnreadable):
            memory.read_gguf(tmp_path / name)
        assert memory._read.cache_info().hits == before + 1
    with pytest.raises(memory.GgufUnreadable):
        memory.read_gguf(tmp_path / "missing.gguf")
