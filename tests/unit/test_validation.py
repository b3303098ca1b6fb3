"""validation.validate_model: every field checked, refused whole with per-field messages."""

from pathlib import Path

import pytest

from cortex_app.models import Device, Engine
from cortex_app.validation import ConfigInvalid, mask_secret, validate_model

IMAGES = {"llamacpp": "ghcr.io/ggml-org/llama.cpp:server", "vllm": "vllm/vllm-openai:latest"}


@pytest.fixture
def models_dir(tmp_path) -> Path:
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    (d / "tiny.gguf").write_bytes(b"GGUF")
    (d / "sub" / "m-00001-of-00002.gguf").write_bytes(b"GGUF")
    (d / "local-hf").mkdir()
    (d / "org" / "name").mkdir(parents=True)
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    (d / "escape.gguf").symlink_to(tmp_path / "outside.gguf")
    return d


def ok(models_dir, others=(), **data):
    return validate_model(data, models_dir=models_dir, default_images=IMAGES, others=others)


def refused(models_dir, others=(), **data) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        ok(models_dir, others=others, **data)
    return info.value.errors


LLAMA = {"name": "tiny", "engine": "llamacpp", "source": "tiny.gguf"}
VLLM = {"name": "qwen", "engine": "vllm", "source": "Qwen/Qwen2.5-0.5B-Instruct"}


def test_minimal_llamacpp_config_gets_defaults(models_dir):
    clean = ok(models_dir, **LLAMA)
    assert clean["served_name"] == "tiny"
    assert clean["engine"] is Engine.LLAMACPP and clean["device"] is Device.CPU
    assert clean["image"] == IMAGES["llamacpp"]
    assert clean["startup_timeout_s"] == 600 and clean["extra_args"] == [] and clean["extra_env"] == {}
    assert "hf_token" not in clean  # absent = keep whatever is stored


def test_full_vllm_config(models_dir):
    clean = ok(models_dir, **VLLM, served_name="qwen-small", device="cuda", gpu_ids="1,0",
               tensor_parallel_size="2", gpu_memory_utilization="0.85", dtype="bfloat16", quantization="awq",
               max_model_len=8192, max_num_seqs=64, enforce_eager="true", trust_remote_code=True,
               enable_prefix_caching=False, extra_args="--seed 7", extra_env={"VLLM_LOGGING_LEVEL": "DEBUG"},
               hf_token="hf_abcdefghijklmnop")
    assert clean["gpu_ids"] == [0, 1] and clean["tensor_parallel_size"] == 2
    assert clean["gpu_memory_utilization"] == 0.85 and clean["enforce_eager"] is True
    assert clean["enable_prefix_caching"] is False and clean["extra_args"] == ["--seed", "7"]
    assert clean["hf_token"] == "hf_abcdefghijklmnop"


@pytest.mark.parametrize("source, expected", [
    ("tiny.gguf", "tiny.gguf"),
    ("sub/m-00001-of-00002.gguf", "sub/m-00001-of-00002.gguf"),
    ("./tiny.gguf", "tiny.gguf"),
])
def test_gguf_paths_inside_the_models_dir(models_dir, source, expected):
    assert ok(models_dir, **{**LLAMA, "source": source})["source"] == expected


def test_absolute_path_inside_the_models_dir_is_made_relative(models_dir):
    assert ok(models_dir, **{**LLAMA, "source": str(models_dir / "tiny.gguf")})["source"] == "tiny.gguf"


@pytest.mark.parametrize("source, message", [
    ("../outside.gguf", "'..'"),
    ("sub/../../outside.gguf", "'..'"),
    ("/etc/passwd", "inside the models dir"),
    ("/tmp/../etc/x.gguf", "inside the models dir"),
    ("escape.gguf", "inside the models dir"),  # a symlink pointing out
    ("missing.gguf", "no file missing.gguf"),
    ("tiny.bin", ".gguf"),
    ("", "required"),
    ("a\\b.gguf", "not allowed"),
])
def test_llamacpp_source_escapes_and_mistakes(models_dir, source, message):
    assert message in refused(models_dir, **{**LLAMA, "source": source})["source"]


@pytest.mark.parametrize("source, expected", [
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
    ("local-hf", "./local-hf"),
    ("./org/name", "./org/name"),  # a local folder that looks like a repo id
])
def test_vllm_sources(models_dir, source, expected):
    assert ok(models_dir, **{**VLLM, "source": source})["source"] == expected


@pytest.mark.parametrize("source", ["../x", "/etc", "no-such-folder", "./missing/dir"])
def test_vllm_bad_sources(models_dir, source):
    assert "source" in refused(models_dir, **{**VLLM, "source": source})


def test_duplicate_names_are_refused(models_dir):
    errors = refused(models_dir, others=[("tiny", "other", None), ("x", "served", None)], **LLAMA, served_name="served")
    assert "already named 'tiny'" in errors["name"]
    assert "already serves 'served'" in errors["served_name"]


def test_replicas_share_an_alias_that_is_nobody_s_served_name(models_dir):
    """A client's `model` names one served name or one alias, never something that is both."""
    others = [("a", "team-a", "team"), ("b", "team-b", "team")]
    assert ok(models_dir, others=others, **LLAMA, alias="team")["alias"] == "team"  # a third replica
    assert ok(models_dir, others=others, **LLAMA, alias="  ")["alias"] is None
    assert "served name" in refused(models_dir, others=others, **LLAMA, alias="team-a")["alias"]
    assert "served name" in refused(models_dir, others=others, **LLAMA, served_name="x", alias="x")["alias"]
    assert "another model's alias" in refused(models_dir, others=others, **LLAMA, served_name="team")["served_name"]
    assert "letters, digits" in refused(models_dir, others=others, **LLAMA, alias="no spaces")["alias"]


@pytest.mark.parametrize("flags, named", [
    ("--port 9000", "--port"), ("--host 0.0.0.0", "--host"), ("--api-key secret", "--api-key"),
    ("-m /models/other.gguf", "-m"), ("--alias x", "--alias"), ("--port=9000", "--port"),
    (["-c", "512", "--model", "x"], "--model"),
])
def test_forbidden_llamacpp_flags_are_named(models_dir, flags, named):
    assert named in refused(models_dir, **LLAMA, extra_args=flags)["extra_args"]


@pytest.mark.parametrize("flags, named", [
    ("--served-model-name x", "--served-model-name"), ("--model a/b", "--model"), ("--port 1", "--port"),
    # vLLM's parser reads `_` as `-`, and takes any unambiguous prefix of a flag (argparse)
    ("--served_model_name x", "--served_model_name (read as --served-model-name)"),
    ("--api_key=k", "--api_key (read as --api-key)"), ("--served-model x", "--served-model (read as "),
    ("--hos 0.0.0.0", "--hos (read as --host)"),
    ("--served-model-name.x=evil", "--served-model-name.x (read as --served-model-name)"),
    ("--api_key.a=s", "(read as --api-key)"), ("--served.x=1", "(read as --served-model-name)"),
    ("--model+ x", "--model+ (read as --model)"),
])
def test_forbidden_vllm_flags_are_named(models_dir, flags, named):
    assert named in refused(models_dir, **VLLM, extra_args=flags)["extra_args"]


@pytest.mark.parametrize("flags", [["--model-impl", "vllm"], ["--port-range", "x"], ["--seed", "1"],
                                   ["--max_num_batched_tokens", "512"], ["-O3"]])
def test_vllm_flags_that_only_resemble_the_consoles_pass(models_dir, flags):
    assert ok(models_dir, **VLLM, extra_args=flags)["extra_args"] == flags


@pytest.mark.parametrize("flags, named", [("--api_key k", "--api_key (read as --api-key)"),
                                          ("--hf_repo=a/b", "--hf_repo (read as --hf-repo)"),
                                          ("--model_url x", "--model_url (read as --model-url)")])
def test_llamacpp_reads_underscores_as_dashes(models_dir, flags, named):
    assert named in refused(models_dir, **LLAMA, extra_args=flags)["extra_args"]


def test_llamacpp_takes_no_prefixes(models_dir):
    # llama-server matches whole names: --hos is no flag of the console's (llama-server refuses it)
    assert ok(models_dir, **LLAMA, extra_args=["--hos", "x", "--port-x", "1"])["extra_args"] == [
        "--hos", "x", "--port-x", "1"]


def test_shell_metacharacters_stay_verbatim_arguments(models_dir):
    clean = ok(models_dir, **LLAMA, extra_args=["--chat-template", "$(rm -rf /); `id` && echo | cat > /x"])
    assert clean["extra_args"] == ["--chat-template", "$(rm -rf /); `id` && echo | cat > /x"]
    parsed = ok(models_dir, **LLAMA, extra_args="--system-prompt 'a; b && $(c)'")
    assert parsed["extra_args"] == ["--system-prompt", "a; b && $(c)"]


@pytest.mark.parametrize("field, value, message", [
    ("extra_args", ["--seed", "1"] * 33, "has 66 arguments; at most 64"),
    ("extra_args", ["--chat-template", "x" * 16_385], "an argument of 16385 characters"),
    ("extra_env", {f"V{i}": "1" for i in range(65)}, "has 65 variables; at most 64"),
    ("extra_env", {"V" * 129: "1"}, "not a valid variable name"),
    ("extra_env", {"BIG": "x" * 16_385}, "the value of BIG has 16385 characters"),
    ("source", "a/" * 300 + "x.gguf", "has 606 characters; at most 510"),
    ("notes", "n" * 4001, "at most 4000 characters"),
])
def test_free_form_fields_are_bounded(models_dir, field, value, message):
    assert message in refused(models_dir, **{**LLAMA, field: value})[field]


def test_the_bounds_themselves_pass(models_dir):
    clean = ok(models_dir, **LLAMA, extra_args=["--seed", "1"] * 32, notes="n" * 4000,
               extra_env={**{f"V{i}": "1" for i in range(63)}, "BIG": "x" * 16_384})
    assert len(clean["extra_args"]) == 64 and len(clean["extra_env"]) == 64


def test_unparseable_extra_args(models_dir):
    assert "cannot be parsed" in refused(models_dir, **LLAMA, extra_args="--x 'unclosed")["extra_args"]


@pytest.mark.parametrize("env, message", [
    ({"NVIDIA_VISIBLE_DEVICES": "0"}, "set by the console"),
    ({"HF_TOKEN": "x"}, "goes in the HF token field"),
    ({"LD_PRELOAD": "/models/evil.so"}, "LD_PRELOAD is a dynamic loader variable"),
    ({"LD_LIBRARY_PATH": "/models"}, "LD_LIBRARY_PATH is a dynamic loader variable"),
    ({"LD_AUDIT": "/x.so"}, "may not be given as extra env"),
    ({"LLAMA_ARG_API_KEY": "k"}, "LLAMA_ARG_API_KEY is set by the console"),
    ({"VLLM_API_KEY": "k"}, "VLLM_API_KEY is set by the console"),
    ({"1BAD": "x"}, "not a valid variable name"),
    ({"A B": "x"}, "not a valid variable name"),
    ("A=b", "map"),
])
def test_bad_extra_env(models_dir, env, message):
    assert message in refused(models_dir, **LLAMA, extra_env=env)["extra_env"]


@pytest.mark.parametrize("field, value", [
    ("context_size", -1), ("context_size", 10**9), ("gpu_layers", 1000), ("parallel_slots", 0),
    ("threads", "many"), ("tensor_parallel_size", 0), ("max_num_seqs", -5), ("startup_timeout_s", 1),
    ("startup_timeout_s", 10**6), ("gpu_memory_utilization", 1.5), ("gpu_memory_utilization", "x"),
    ("max_model_len", True), ("dtype", "int3"), ("cache_type_k", "q2"), ("quantization", "AWQ; rm"),
    ("flash_attn", "sometimes"), ("device", "tpu"), ("gpu_ids", "0,0"), ("gpu_ids", "-1"),
])
def test_out_of_range_and_wrong_kinds(models_dir, field, value):
    extra = {"device": "cuda"} if field == "gpu_ids" else {}
    assert field in refused(models_dir, **LLAMA, **extra, **{field: value})


@pytest.mark.parametrize("data, field", [
    ({**LLAMA, "engine": "tgi"}, "engine"),
    ({**LLAMA, "name": "Bad Name"}, "name"),
    ({**LLAMA, "name": "-x"}, "name"),
    ({**LLAMA, "served_name": "has space"}, "served_name"),
    ({**LLAMA, "image": "not an image"}, "image"),
    ({**LLAMA, "gpu_ids": [0]}, "gpu_ids"),  # GPUs on a cpu model
    ({**LLAMA, "colour": "red"}, "colour"),
    ({**LLAMA, "hf_token": "has space"}, "hf_token"),
    ({**LLAMA, "hf_token": "hf_" + "\U0001F600" * 200}, "hf_token"),  # sealed, it would not fit its column
])
def test_other_refusals(models_dir, data, field):
    assert field in refused(models_dir, **data)


def test_every_bad_field_is_reported_at_once(models_dir):
    errors = refused(models_dir, name="", engine="llamacpp", source="../x.gguf", threads=0, extra_args="--port 1")
    assert {"name", "source", "threads", "extra_args"} <= set(errors)


def test_mask_secret_shows_only_the_end():
    assert mask_secret("hf_abcdefghijklmnopWXYZ") == "••••WXYZ"
    assert mask_secret("short") == "••••"
    assert mask_secret(None) == ""


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_an_hf_token_in_extra_env_is_refused_saying_where_it_goes(models_dir, name):
    assert "goes in the HF token field" in refused(models_dir, **{**LLAMA, "extra_env": {name: "hf_abc"}})["extra_env"]


HOSTS = {1: "local", 2: "gpu-2"}


def hosted(models_dir, **data):
    return validate_model(data, models_dir=models_dir, default_images=IMAGES, hosts=HOSTS)


@pytest.mark.parametrize("given,host_id,auto", [
    ("gpu-2", 2, False), ("GPU-2", 2, False), ("2", 2, False), (2, 2, False), ("local", 1, False),
    ("auto", None, True), ("AUTO", None, True),
])
def test_a_model_belongs_to_a_host_by_name_or_id_or_auto(models_dir, given, host_id, auto):
    clean = hosted(models_dir, **LLAMA, host=given)
    assert clean.get("host_id") == host_id and clean["auto_host"] is auto


def test_no_host_given_leaves_it_to_the_default_and_an_unknown_one_is_refused(models_dir):
    clean = hosted(models_dir, **LLAMA)
    assert "host_id" not in clean and "auto_host" not in clean
    with pytest.raises(ConfigInvalid) as info:
        hosted(models_dir, **LLAMA, host="gpu-9")
    assert info.value.errors == {"host": "no host 'gpu-9': choose one of gpu-2, local, or auto"}


def test_a_model_on_another_host_has_its_file_there_checked_for_shape_only(models_dir):
    # The console cannot see that machine's disk: a file missing here is no error there...
    assert hosted(models_dir, **{**LLAMA, "source": "only-there.gguf"}, host="gpu-2")["source"] == "only-there.gguf"
    # ...but here it is, and the shape is checked everywhere.
    with pytest.raises(ConfigInvalid) as info:
        hosted(models_dir, **{**LLAMA, "source": "only-there.gguf"}, host="local")
    assert "no file only-there.gguf" in info.value.errors["source"]
    with pytest.raises(ConfigInvalid) as info:
        hosted(models_dir, **{**LLAMA, "source": "../etc/passwd.gguf"}, host="gpu-2")
    assert "may not contain '..'" in info.value.errors["source"]
