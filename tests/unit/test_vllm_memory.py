"""vLLM's estimate from a model's own files (engines/vllm_memory.py): config.json and the
weight files' sizes, in a local folder or the Hugging Face cache's layout."""

import json

import pytest

from cortex_app.engines.vllm_memory import VllmUnreadable, estimate_vllm, model_folder, read_facts

LLAMA_3_2_1B = {"num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 2048,
                "head_dim": 64, "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}


def folder_with(tmp_path, config, weights=(("model.safetensors", 2_471_645_608),)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name, size in weights:
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)  # sparse: the size is what counts
    return tmp_path


def test_weights_kv_per_sequence_and_the_share(tmp_path):
    facts = read_facts(folder_with(tmp_path, LLAMA_3_2_1B))
    e = estimate_vllm(facts, tensor_parallel=None, utilization=None, max_model_len=8192)
    assert round(e.weights_mib) == 2357  # 2,471,645,608 bytes
    # K and V: 2 x 16 layers x 8 KV heads x 64 x 2 bytes x 8,192 tokens = 256 MiB
    assert e.kv_mib == 256 and e.utilization == 0.9 and e.gpus == 1
    two = estimate_vllm(facts, tensor_parallel=2, utilization=0.8, max_model_len=None)
    assert two.weights_mib == pytest.approx(e.weights_mib / 2) and two.max_model_len == 131072
    assert two.kv_mib == 256 * 16 / 2  # the whole trained length, split over two GPUs
    assert "claims 80% of each of its 2 GPU(s)" in two.summary()


def test_a_dtype_set_on_the_model_wins_and_nested_text_configs_are_read(tmp_path):
    nested = {"text_config": LLAMA_3_2_1B, "architectures": ["Mllama"]}
    facts = read_facts(folder_with(tmp_path, nested), dtype="float32")
    assert facts.layers == 16 and facts.dtype_bytes == 4


def test_the_hugging_face_cache_layout_and_what_is_missing(tmp_path):
    cache = tmp_path / "hf"
    snap = cache / "hub" / "models--meta-llama--Llama-3.2-1B" / "snapshots" / "abc123"
    folder_with(snap, LLAMA_3_2_1B)
    assert model_folder("meta-llama/Llama-3.2-1B", tmp_path / "models", cache) == snap
    assert model_folder("./mine", tmp_path / "models", cache) == tmp_path / "models" / "mine"
    with pytest.raises(VllmUnreadable, match="not in the Hugging Face cache yet"):
        model_folder("org/other", tmp_path / "models", cache)
    with pytest.raises(VllmUnreadable, match="no config.json"):
        read_facts(tmp_path / "models")
    with pytest.raises(VllmUnreadable, match="no weight files"):
        read_facts(folder_with(tmp_path / "empty", LLAMA_3_2_1B, weights=()))
    with pytest.raises(VllmUnreadable, match="lacks num_hidden_layers"):
        read_facts(folder_with(tmp_path / "odd", {"model_type": "x"}))


def test_one_checkpoint_in_two_formats_counts_once(tmp_path):
    both = folder_with(tmp_path / "both", LLAMA_3_2_1B, weights=(("model.safetensors", 1000), ("pytorch_model.bin", 1000),
                                                                  ("training_args.bin", 5)))
    assert read_facts(both).weights_bytes == 1000
    sharded = folder_with(tmp_path / "sharded", LLAMA_3_2_1B, weights=(
        ("model-00001-of-00002.safetensors", 600), ("model-00002-of-00002.safetensors", 400),
        ("consolidated.safetensors", 1000)))  # Mistral ships both; the index says which vLLM loads
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert read_facts(sharded).weights_bytes == 1000
    old = folder_with(tmp_path / "old", LLAMA_3_2_1B, weights=(("pytorch_model.bin", 700), ("optimizer.pt", 1400)))
    assert read_facts(old).weights_bytes == 700


def test_a_float32_checkpoint_runs_in_16_bits_under_auto(tmp_path):
    facts = read_facts(folder_with(tmp_path, {**LLAMA_3_2_1B, "torch_dtype": "float32"},
                                   weights=(("model.safetensors", 4000),)))
    assert facts.dtype_bytes == 2 and facts.weights_bytes == 2000


def test_kv_heads_are_copied_when_there_are_more_gpus_than_heads(tmp_path):
    facts = read_facts(folder_with(tmp_path, {**LLAMA_3_2_1B, "num_key_value_heads": 2}))
    one = estimate_vllm(facts, tensor_parallel=1, utilization=None, max_model_len=8192)
    eight = estimate_vllm(facts, tensor_parallel=8, utilization=None, max_model_len=8192)
    assert eight.kv_mib == one.kv_mib / 2  # 2 heads over 8 GPUs: each GPU still holds a whole head


@pytest.mark.parametrize("source", ["../outside", "./../outside", "sub/../../outside", "{outside}"])
def test_the_forms_estimate_reads_no_folder_outside_the_models_dir(tmp_path, source):
    """The model form estimates as it is typed (states/model_form.form_estimate): a vLLM folder
    outside the models dir is not read, as saving it would be refused."""
    from cortex_app.states.model_form import form_estimate

    models, outside = tmp_path / "models", tmp_path / "outside"
    models.mkdir()
    folder_with(outside, LLAMA_3_2_1B)
    folder_with(models / "inside", LLAMA_3_2_1B)
    values = {"engine": "vllm", "source": source.format(outside=outside)}
    assert form_estimate(values, models) == ""
    assert "claims 90%" in form_estimate({"engine": "vllm", "source": "./inside"}, models)
