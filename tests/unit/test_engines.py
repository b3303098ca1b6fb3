"""Spec building, table-driven: a model row -> ContainerSpec for each engine."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from cortex_app.engines import build_spec
from cortex_app.engines.spec import GpuRequest, Mount
from cortex_app.models import Device, Engine, Model
from cortex_app.settings import load_settings

SETTINGS = load_settings({"CORTEX_DATA_DIR": "/srv/cortex", "CORTEX_MODELS_DIR": "/srv/models"})


def llama(**kw) -> Model:
    return Model(**{"id": 7, "name": "tiny", "served_name": "tiny-chat", "engine": Engine.LLAMACPP,
                    "image": "llama:server", "source": "sub/tiny.gguf", **kw})


def vllm(**kw) -> Model:
    return Model(**{"id": 9, "name": "qwen", "served_name": "qwen", "engine": Engine.VLLM,
                    "image": "vllm/vllm-openai:latest", "source": "Qwen/Qwen2.5-0.5B", **kw})


def test_llamacpp_cpu_minimal():
    spec = build_spec(llama(), SETTINGS)
    assert spec.name == "cortex-model-7-tiny"
    assert spec.image == "llama:server"
    assert spec.args == ("-m", "/models/sub/tiny.gguf", "--host", "0.0.0.0", "--port", "8080",
                         "--alias", "tiny-chat", "-ngl", "0", "--metrics")
    assert spec.env == {"NVIDIA_VISIBLE_DEVICES": "void"} and spec.gpus is None  # CPU: never a GPU
    assert spec.no_new_privileges is True and spec.pids_limit == 16384  # the console's defaults
    assert spec.container_port == 8080
    assert spec.mounts == (Mount("/srv/models", "/models", read_only=True),)
    assert spec.restart_policy == "no" and spec.init is True
    assert spec.labels == {"cortex.managed": "true", "cortex.model-id": "7", "cortex.model-name": "tiny",
                           "cortex.engine": "llamacpp", "cortex.spec-hash": spec.spec_hash, "cortex.host-id": "1"}


@pytest.mark.parametrize("fields, expected_args", [
    ({"context_size": 4096}, ["-c", "4096"]),
    ({"parallel_slots": 4, "threads": 8}, ["--parallel", "4", "-t", "8"]),
    ({"flash_attn": True}, ["--flash-attn", "on"]),
    ({"flash_attn": False}, ["--flash-attn", "off"]),
    ({"cache_type_k": "q8_0", "cache_type_v": "q4_0"}, ["--cache-type-k", "q8_0", "--cache-type-v", "q4_0"]),
    ({"embeddings": True}, ["--embeddings"]),
    ({"extra_args": ["--jinja", "--poll", "0"]}, ["--jinja", "--poll", "0"]),
])
def test_llamacpp_options(fields, expected_args):
    args = list(build_spec(llama(**fields), SETTINGS).args)
    start = args.index(expected_args[0])
    assert args[start:start + len(expected_args)] == expected_args


@pytest.mark.parametrize("fields, ngl, visible, request_ids", [
    ({"device": Device.CPU, "gpu_layers": 20}, "0", "void", "none"),  # CPU ignores gpu_layers, sees no GPU
    ({"device": Device.CUDA}, "999", "all", None),
    ({"device": Device.CUDA, "gpu_layers": 20, "gpu_ids": [1, 3]}, "20", "1,3", ("1", "3")),
    ({"device": Device.CUDA, "gpu_ids": [0]}, "999", "0", ("0",)),
])
def test_llamacpp_gpu_selection(fields, ngl, visible, request_ids):
    spec = build_spec(llama(**fields), SETTINGS)
    assert spec.args[spec.args.index("-ngl") + 1] == ngl
    assert spec.env.get("NVIDIA_VISIBLE_DEVICES") == visible
    if request_ids == "none":
        assert spec.gpus is None
    else:
        assert spec.gpus == GpuRequest(device_ids=request_ids)


def test_vllm_hf_repo_with_token_and_options():
    spec = build_spec(vllm(device=Device.CUDA, gpu_ids=[0, 1], tensor_parallel_size=2, gpu_memory_utilization=0.9,
                           dtype="bfloat16", quantization="awq", max_model_len=8192, max_num_seqs=32,
                           enforce_eager=True, trust_remote_code=True, enable_prefix_caching=False,
                           hf_token="hf_secret_token", extra_env={"VLLM_LOGGING_LEVEL": "INFO"}), SETTINGS)
    assert spec.args == (
        "--model", "Qwen/Qwen2.5-0.5B", "--host", "0.0.0.0", "--port", "8000", "--served-model-name", "qwen",
        "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.9", "--dtype", "bfloat16",
        "--quantization", "awq", "--max-model-len", "8192", "--max-num-seqs", "32", "--enforce-eager",
        "--trust-remote-code", "--no-enable-prefix-caching")
    assert spec.env == {"VLLM_LOGGING_LEVEL": "INFO", "NVIDIA_VISIBLE_DEVICES": "0,1",
                        "HF_TOKEN": "hf_secret_token", "HUGGING_FACE_HUB_TOKEN": "hf_secret_token"}
    assert spec.gpus == GpuRequest(device_ids=("0", "1"))
    assert spec.shm_size == "8g" and spec.container_port == 8000
    assert Mount("/srv/cortex/hf-cache", "/root/.cache/huggingface", read_only=False) in spec.mounts
    assert "hf_secret_token" not in repr(spec), "the token must not appear in the spec's repr"


def test_vllm_local_folder_is_offline_and_token_not_sent():
    spec = build_spec(vllm(source="./org/name", hf_token="hf_x"), SETTINGS)
    assert spec.args[:2] == ("--model", "/models/org/name")
    assert spec.env == {"HF_HUB_OFFLINE": "1", "NVIDIA_VISIBLE_DEVICES": "void"}
    assert spec.gpus is None  # cpu


def test_hash_is_stable_and_tracks_every_container_change():
    base = build_spec(llama(), SETTINGS)
    assert base.spec_hash == build_spec(llama(), SETTINGS).spec_hash
    assert base.spec_hash == build_spec(llama(notes="just a note", startup_timeout_s=30), SETTINGS).spec_hash
    changes = [dict(image="llama:other"), dict(context_size=512), dict(extra_env={"A": "1"}),
               dict(extra_args=["--jinja"]), dict(device=Device.CUDA), dict(served_name="x"),
               dict(source="other.gguf"), dict(name="renamed")]
    hashes = {build_spec(llama(**c), SETTINGS).spec_hash for c in changes}
    assert base.spec_hash not in hashes and len(hashes) == len(changes)
    other_dir = load_settings({"CORTEX_DATA_DIR": "/srv/cortex", "CORTEX_MODELS_DIR": str(Path("/elsewhere"))})
    assert build_spec(llama(), other_dir).spec_hash != base.spec_hash
    # The console's hardening settings change every container: running ones show as stale.
    for env in ({"CORTEX_MODEL_PIDS_LIMIT": "0"}, {"CORTEX_MODEL_NO_NEW_PRIVILEGES": "false"}):
        looser = load_settings({"CORTEX_DATA_DIR": "/srv/cortex", "CORTEX_MODELS_DIR": "/srv/models", **env})
        assert build_spec(llama(), looser).spec_hash != base.spec_hash
    assert build_spec(vllm(hf_token="a"), SETTINGS).spec_hash != build_spec(vllm(hf_token="b"), SETTINGS).spec_hash


def test_a_container_made_for_another_host_says_so_and_host_1_keeps_its_old_hash():
    here = build_spec(llama(), SETTINGS)
    there = build_spec(llama(host_id=4), SETTINGS)
    assert there.labels["cortex.host-id"] == "4" and here.labels["cortex.host-id"] == "1"
    assert there.spec_hash != here.spec_hash
    body = dataclasses.asdict(here)
    body["env"] = sorted(here.env.items())
    del body["network"], body["host_id"]  # the hash as it was before hosts existed
    assert here.spec_hash == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
