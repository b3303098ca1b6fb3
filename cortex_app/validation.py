"""Validation of a model configuration: the one place the UI and the API both call.

`validate_model(data, ...)` checks every field and returns the clean values, or raises
`ConfigInvalid` carrying one message per bad field; callers save nothing in that case.
It reads the filesystem (does the GGUF file exist under the models dir) and nothing else.
"""

from __future__ import annotations

import json

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Optional

from cortex_app.engines import llamacpp, vllm
from cortex_app.models import Device, Engine

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*(?::[A-Za-z0-9_.-]+)?$", re.IGNORECASE)
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUANTIZATION = re.compile(r"^[a-z0-9_-]{1,32}$")
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Env vars the console sets itself (GPU selection, HF access): extra env may not override them.
# Also the engines' own variables for flags the console controls (llama-server reads
# LLAMA_ARG_<FLAG> and LLAMA_API_KEY, vLLM VLLM_API_KEY).
CONTROLLED_ENV = frozenset({"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "HF_TOKEN",
                            "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "LLAMA_API_KEY", "LLAMA_ARG_API_KEY",
                            "LLAMA_ARG_API_KEY_FILE", "LLAMA_ARG_HF_REPO", "LLAMA_ARG_MODEL_URL", "LLAMA_ARG_MODEL",
                            "LLAMA_ARG_HOST", "LLAMA_ARG_PORT", "LLAMA_ARG_ALIAS", "VLLM_API_KEY"})
HF_TOKEN_ENV = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
# Bounds on the free-form fields (the UI and the API alike): a config is a few lines, and
# the source fits its column.
MAX_SOURCE = 512
MAX_EXTRA_ARGS, MAX_ARG_CHARS = 64, 16_384  # one argument may be an inline chat template
MAX_EXTRA_ENV, MAX_ENV_NAME, MAX_ENV_VALUE = 64, 128, 16_384
MAX_NOTES = 4000
# The dynamic loader's variables (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...): never from a model's config.
LOADER_ENV_PREFIX = "LD_"

INT_RANGES: dict[str, tuple[int, int]] = {
    "context_size": (0, 1_048_576),
    "gpu_layers": (0, 999),
    "parallel_slots": (1, 256),
    "threads": (1, 512),
    "tensor_parallel_size": (1, 64),
    "max_model_len": (16, 10_000_000),
    "max_num_seqs": (1, 65_536),
    "startup_timeout_s": (5, 7_200),
}
BOOLS = ("flash_attn", "embeddings", "enforce_eager", "trust_remote_code", "enable_prefix_caching",
         "start_on_boot", "restart_on_failure")
OPTIONAL_BOOLS = ("flash_attn", "enable_prefix_caching")  # None = the engine's default


class ConfigInvalid(ValueError):
    """The config is refused whole; `errors` maps each bad field to its message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _int(value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError("must be a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("must be a whole number") from None
    if not lo <= number <= hi:
        raise ValueError(f"must be between {lo} and {hi}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def model_relative_path(source: str, models_dir: Path) -> str:
    """`source` as a clean path relative to the models dir, or ValueError if it would leave it."""
    raw = source.strip()
    if not raw:
        raise ValueError("is required")
    if "\x00" in raw or "\\" in raw:
        raise ValueError("contains characters not allowed in a path")
    pure = PurePosixPath(raw)
    if pure.is_absolute():
        try:
            pure = pure.relative_to(PurePosixPath(str(models_dir)))
        except ValueError:
            raise ValueError(f"must be inside the models dir ({models_dir})") from None
    if any(part == ".." for part in pure.parts):
        raise ValueError("may not contain '..'")
    resolved = (models_dir / pure).resolve()
    if resolved != models_dir.resolve() and models_dir.resolve() not in resolved.parents:
        raise ValueError(f"must be inside the models dir ({models_dir})")  # e.g. a symlink out
    return str(pure)


def parse_extra_args(value: Any, controlled: Callable[[str], Optional[str]]) -> list[str]:
    """A list of arguments, passed verbatim (never through a shell). `controlled(arg)`: the
    console-set flag the engine would read `arg` as (None: not one); those are refused."""
    if _blank(value):
        return []
    if isinstance(value, str):
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be parsed as arguments ({exc})") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value):
        args = list(value)
    else:
        raise ValueError("must be a list of strings")
    if len(args) > MAX_EXTRA_ARGS:
        raise ValueError(f"has {len(args)} arguments; at most {MAX_EXTRA_ARGS}")
    if long := next((a for a in args if len(a) > MAX_ARG_CHARS), None):
        raise ValueError(f"has an argument of {len(long)} characters ({long[:20]}...); at most {MAX_ARG_CHARS}")
    bad = []
    for arg in args:
        given, flag = arg.split("=", 1)[0], controlled(arg)
        if flag and (said := given if given == flag else f"{given} (read as {flag})") not in bad:
            bad.append(said)
    if bad:
        raise ValueError(f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} set by the console and may not be "
                         "given as extra flags")
    return args


def parse_extra_env(value: Any) -> dict[str, str]:
    if _blank(value):
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("must be a map of NAME to value")
    if len(value) > MAX_EXTRA_ENV:
        raise ValueError(f"has {len(value)} variables; at most {MAX_EXTRA_ENV}")
    env: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_KEY.match(key) or len(key) > MAX_ENV_NAME:
            raise ValueError(f"{str(key)[:40]!r} is not a valid variable name (letters, digits, _; "
                             f"at most {MAX_ENV_NAME})")
        if key in HF_TOKEN_ENV:
            raise ValueError(f"{key}: a Hugging Face token goes in the HF token field (vLLM models; kept sealed, "
                             "shown masked); a llama.cpp model loads a GGUF file from the models dir and needs none")
        if key in CONTROLLED_ENV:
            raise ValueError(f"{key} is set by the console and may not be given as extra env")
        if key.startswith(LOADER_ENV_PREFIX):
            raise ValueError(f"{key} is a dynamic loader variable (it could load any code into the engine) "
                             "and may not be given as extra env")
        if not isinstance(val, str) or "\x00" in val:
            raise ValueError(f"the value of {key} must be text")
        if len(val) > MAX_ENV_VALUE:
            raise ValueError(f"the value of {key} has {len(val)} characters; at most {MAX_ENV_VALUE}")
        env[key] = val
    return env


_DEFAULT_NUMBERS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty")
_DEFAULT_INTS = ("top_k", "max_tokens", "seed")


def parse_request_defaults(value: Any) -> dict[str, Any]:
    """What the gateway adds to a request that does not set it: a JSON object (or its text)
    of generation settings, e.g. {"temperature": 0.7, "max_tokens": 512}."""
    if _blank(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError('must be a JSON object, e.g. {"temperature": 0.7, "max_tokens": 512}') from None
    if not isinstance(value, Mapping):
        raise ValueError('must be a JSON object, e.g. {"temperature": 0.7, "max_tokens": 512}')
    out: dict[str, Any] = {}
    for key, val in value.items():
        if key in _DEFAULT_NUMBERS:
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not -1e6 <= val <= 1e6:
                raise ValueError(f"{key} must be a number")
        elif key in _DEFAULT_INTS:
            if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val <= 2**31 - 1:
                raise ValueError(f"{key} must be a whole number, 0 or more")
        elif key == "stop":
            items = [val] if isinstance(val, str) else val
            if not isinstance(items, list) or not 1 <= len(items) <= 4 or not all(
                    isinstance(i, str) and 0 < len(i) <= 64 for i in items):
                raise ValueError("stop must be a text, or a list of 1 to 4 texts (each at most 64 characters)")
        else:
            raise ValueError(f"{str(key)[:40]!r} cannot have a default here; use one of "
                             + ", ".join((*_DEFAULT_NUMBERS, *_DEFAULT_INTS, "stop")))
        out[key] = val
    return out


def parse_gpu_ids(value: Any) -> Optional[list[int]]:
    if _blank(value) or value == "all":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError("must be a list of GPU indices, or 'all'")
    ids = [_int(i, 0, 63) for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError("lists a GPU twice")
    return sorted(ids)


def validate_model(
    data: Mapping[str, Any],
    *,
    models_dir: Path,
    default_images: Mapping[str, str],
    others: Iterable[tuple[str, str, Optional[str]]] = (),
    hosts: Optional[Mapping[int, str]] = None,
) -> dict[str, Any]:
    """Check every field of `data`; return clean column values, or raise ConfigInvalid.

    `hosts`: id -> name of every host (default: host 1 only). `host` is a host's id or name,
    or "auto" (placement picks one at each Start); absent: host 1 for a new model, the same
    host for an edit. A model on another host has its files on that machine, which the
    console cannot see: its source is checked for shape only.

    `others`: (name, served_name, alias) of every other model, for the uniqueness checks (a
    client's `model` names one served name, or an alias that replicas share: never both).
    Keys not in `data` get their defaults, except `hf_token`, which is only returned when
    given (absent = keep the stored one; "" = clear it).
    """
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    def check(field: str, fn) -> None:
        try:
            out[field] = fn()
        except ValueError as exc:
            errors[field] = str(exc)

    known = {"name", "served_name", "alias", "engine", "image", "source", "device", "gpu_ids", "extra_args",
             "extra_env", "request_defaults", "hf_token", "notes", "cache_type_k", "cache_type_v", "dtype", "quantization",
             "gpu_memory_utilization", "host", *INT_RANGES, *BOOLS}
    for key in data:
        if key not in known:
            errors[key] = "is not a model setting"

    others = list(others)
    taken_names = {n for n, _, _ in others}
    taken_served = {s for _, s, _ in others}
    aliases = {a for _, _, a in others if a}

    def name() -> str:
        value = str(data.get("name") or "").strip()
        if not NAME.match(value):
            raise ValueError("must be 1-63 lowercase letters, digits or '-', starting with a letter or digit")
        if value in taken_names:
            raise ValueError(f"another model is already named {value!r}")
        return value

    check("name", name)

    def served_name() -> str:
        value = str(data.get("served_name") or out.get("name") or "").strip()
        if not value and "name" in errors:
            return ""  # defaults to the name, which already has its own error
        if not SERVED_NAME.match(value):
            raise ValueError("must be 1-128 letters, digits or . _ : / -, starting with a letter or digit")
        if value in taken_served:
            raise ValueError(f"another model already serves {value!r}")
        if value in aliases:
            raise ValueError(f"{value!r} is another model's alias")
        return value

    check("served_name", served_name)

    def alias() -> Optional[str]:
        value = str(data.get("alias") or "").strip()
        if not value:
            return None
        if not SERVED_NAME.match(value):
            raise ValueError("must be 1-128 letters, digits or . _ : / -, starting with a letter or digit")
        if value in taken_served or value == out.get("served_name"):
            raise ValueError(f"{value!r} is a model's served name; an alias is a name of its own")
        return value

    check("alias", alias)

    def engine() -> Engine:
        try:
            return Engine(str(data.get("engine") or "").strip())
        except ValueError:
            raise ValueError(f"must be one of: {', '.join(e.value for e in Engine)}") from None

    check("engine", engine)
    eng = out.get("engine")

    def image() -> str:
        value = str(data.get("image") or "").strip() or (default_images.get(eng.value, "") if eng else "")
        if not value or not IMAGE.match(value) or len(value) > 255:
            raise ValueError("must be an image reference such as ghcr.io/ggml-org/llama.cpp:server")
        return value

    check("image", image)

    hosts_known = dict(hosts or {1: "local"})

    def host() -> Optional[int]:
        raw = data.get("host")
        if raw is None or raw == "":
            return None
        if str(raw).strip().lower() == "auto":
            out["auto_host"] = True
            return None
        by_name = {n.lower(): i for i, n in hosts_known.items()}
        text = str(raw).strip()
        found = int(text) if text.isdigit() and int(text) in hosts_known else by_name.get(text.lower())
        if found is None:
            raise ValueError(f"no host {text!r}: choose one of {', '.join(sorted(hosts_known.values()))}, or auto")
        out["auto_host"] = False
        return found

    try:
        chosen = host()
        if chosen is not None:
            out["host_id"] = chosen
    except ValueError as exc:
        errors["host"] = str(exc)
    remote = out.get("host_id") not in (None, 1)

    def source() -> str:
        raw = str(data.get("source") or "").strip()
        if len(raw) > MAX_SOURCE - 2:  # a local vLLM folder is kept as "./<path>"
            raise ValueError(f"has {len(raw)} characters; at most {MAX_SOURCE - 2}")
        if eng == Engine.VLLM and vllm.is_hf_repo(raw):
            return raw
        rel = model_relative_path(raw, models_dir)
        path = models_dir / rel
        if eng == Engine.LLAMACPP:
            if not rel.endswith(".gguf"):
                raise ValueError("must be a .gguf file in the models dir")
            if remote:
                return rel  # on that host's disk: its engine says at Start if it is missing
            if not path.is_file():
                raise ValueError(f"no file {rel} in the models dir ({models_dir})")
        elif eng == Engine.VLLM:
            if not remote and not path.is_dir():
                raise ValueError(f"is neither a Hugging Face repo id (org/name) nor a folder in the models dir "
                                 f"({models_dir})")
            return "./" + rel
        return rel

    check("source", source)

    def device() -> Device:
        try:
            return Device(str(data.get("device") or "cpu").strip())
        except ValueError:
            raise ValueError("must be cpu or cuda") from None

    check("device", device)
    check("gpu_ids", lambda: parse_gpu_ids(data.get("gpu_ids")))
    if out.get("device") == Device.CPU and out.get("gpu_ids"):
        errors["gpu_ids"] = "GPUs can only be selected for device cuda"

    for field, (lo, hi) in INT_RANGES.items():
        if field == "startup_timeout_s":
            check(field, lambda: _int(data.get(field, 600), lo, hi))
        else:
            check(field, lambda: None if _blank(data.get(field)) else _int(data.get(field), lo, hi))

    for field in BOOLS:
        if field in OPTIONAL_BOOLS:
            check(field, lambda: None if _blank(data.get(field)) else _bool(data.get(field)))
        else:
            check(field, lambda: _bool(data.get(field, False)))

    def gpu_mem() -> Optional[float]:
        value = data.get("gpu_memory_utilization")
        if _blank(value):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number between 0.05 and 1.0") from None
        if not 0.05 <= number <= 1.0:
            raise ValueError("must be between 0.05 and 1.0")
        return number

    check("gpu_memory_utilization", gpu_mem)

    def choice(field: str, allowed: tuple[str, ...]):
        def fn():
            value = data.get(field)
            if _blank(value):
                return None
            if str(value).strip() not in allowed:
                raise ValueError(f"must be one of: {', '.join(allowed)}")
            return str(value).strip()
        return fn

    check("cache_type_k", choice("cache_type_k", CACHE_TYPES))
    check("cache_type_v", choice("cache_type_v", CACHE_TYPES))
    check("dtype", choice("dtype", DTYPES))

    def quantization() -> Optional[str]:
        value = data.get("quantization")
        if _blank(value):
            return None
        if not QUANTIZATION.match(str(value).strip()):
            raise ValueError("must be a quantization method name such as awq, gptq or fp8")
        return str(value).strip()

    check("quantization", quantization)
    controlled = {Engine.LLAMACPP: llamacpp.controlled_flag, Engine.VLLM: vllm.controlled_flag}.get(
        eng, lambda arg: llamacpp.controlled_flag(arg) or vllm.controlled_flag(arg))
    check("extra_args", lambda: parse_extra_args(data.get("extra_args"), controlled))
    check("extra_env", lambda: parse_extra_env(data.get("extra_env")))
    check("request_defaults", lambda: parse_request_defaults(data.get("request_defaults")))

    if "hf_token" in data:
        def hf_token() -> Optional[str]:
            value = data.get("hf_token")
            if _blank(value):
                return None
            value = str(value).strip()
            if len(value) > 512 or not all("!" <= c <= "~" for c in value):
                raise ValueError("must be a single token of printable ASCII, without spaces (at most 512)")
            return value
        check("hf_token", hf_token)

    def notes() -> str:
        value = str(data.get("notes") or "")
        if len(value) > MAX_NOTES:
            raise ValueError(f"must be at most {MAX_NOTES} characters")
        return value

    check("notes", notes)
    if errors:
        raise ConfigInvalid(errors)
    return out


def mask_secret(value: Optional[str]) -> str:
    """What the UI may show of a secret: that it is set, and its last 4 characters."""
    if not value:
        return ""
    return "••••" + value[-4:] if len(value) >= 12 else "••••"
