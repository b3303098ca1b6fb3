"""Create / edit a model: the fields as text, checked by validation.validate_model (through
crud), errors shown beside each field; nothing is saved until the whole form is valid."""

from __future__ import annotations

import asyncio
import enum
import json
import re
import shlex
from pathlib import Path
from typing import Optional

import reflex as rx

from cortex_app import crud, hosts
from cortex_app.engines import memory, vllm
from cortex_app.images import canonical, is_present
from cortex_app.models import Device, Engine, Model
from cortex_app.runtime.docker import DockerRuntimeError
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState
from cortex_app.states.models import model_id_in
from cortex_app.validation import ConfigInvalid, mask_secret, model_relative_path

TEXT_FIELDS = ["name", "served_name", "alias", "engine", "image", "source", "device", "gpu_ids", "context_size", "gpu_layers",
               "parallel_slots", "threads", "cache_type_k", "cache_type_v", "tensor_parallel_size",
               "gpu_memory_utilization", "dtype", "quantization", "max_model_len", "max_num_seqs",
               "startup_timeout_s", "notes", "extra_args", "extra_env", "request_defaults", "hf_token",
               "flash_attn", "enable_prefix_caching"]  # the last two: "" (engine default), true, false
FLAGS = ["embeddings", "enforce_eager", "trust_remote_code", "start_on_boot", "restart_on_failure"]
SPECIAL = ("extra_args", "extra_env", "request_defaults", "hf_token", "gpu_ids")  # not shown as stored
ENGINE_DEFAULT = "engine default"  # a select's choice that leaves the setting unset
EMPTY = {f: "" for f in TEXT_FIELDS} | {"engine": "llamacpp", "device": "cpu", "startup_timeout_s": "600"}


SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSW", re.IGNORECASE)
MASK = "••••••"  # shown instead of a secret-looking value; saving it unchanged keeps the stored one


def env_text(env: dict[str, str]) -> str:
    """The env as NAME=value lines, secret-looking values masked: the browser never gets them."""
    return "\n".join(f"{k}={MASK if SECRET_NAME.search(k) else v}" for k, v in env.items())


def unmask_env(edited: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """A value still equal to the mask means "unchanged": keep the stored value."""
    return {k: (stored.get(k, "") if v == MASK else v) for k, v in edited.items()}


def parse_env_text(text: str) -> dict[str, str] | str:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if "=" not in line:
            return f"line {line.strip()!r} is not NAME=value"
        key, value = line.split("=", 1)
        env[key.strip()] = value
    return env


class ModelFormState(AdminState):
    model_id: int = 0
    values: dict[str, str] = dict(EMPTY)
    flags: dict[str, bool] = {f: False for f in FLAGS}
    errors: dict[str, str] = {}
    token_hint: str = ""  # what may be shown of a stored HF token
    gguf_files: list[str] = []
    running_note: str = ""
    show_advanced: bool = False
    image_here: dict = {}  # {"image": the image Start would use, "present": on the engine}
    memory_estimate: str = ""  # form_estimate() of the values as they stand
    host_choices: list[str] = ["local", "auto"]  # every host's name, then auto (placement picks at Start)
    _defaults: dict[str, str] = {}
    _tags: set[str] = set()

    @rx.var
    def is_llamacpp(self) -> bool:
        return self.values.get("engine", "llamacpp") == "llamacpp"

    @rx.var
    def title(self) -> str:
        return f"Edit {self.values.get('name', '')}" if self.model_id else "New model"

    def _check_image(self) -> None:
        image = self.values.get("image", "").strip() or self._defaults.get(self.values.get("engine", "llamacpp"), "")
        self.image_here = {"image": canonical(image), "present": is_present(image, self._tags)} if image else {}

    async def _read_images(self) -> None:
        svc = services()
        self._defaults = {"llamacpp": svc.settings.llamacpp_image, "vllm": svc.settings.vllm_image}
        try:
            self._tags = set(await asyncio.to_thread(svc.runtime.image_tags))
        except DockerRuntimeError:
            self._tags = set()  # the engine is away: every image reads as missing, Pull says why
        self._check_image()

    async def _read_hosts(self, current: str = "") -> None:
        rows = await asyncio.to_thread(hosts.list_hosts, services().db)
        self.host_choices = [h.name for h in rows] + ["auto"]
        self.values["host"] = current or (rows[0].name if rows else "local")

    def _gguf(self) -> list[str]:
        root = services().settings.models_dir
        if not root.is_dir():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.gguf") if p.is_file())[:500]

    @rx.event
    async def open_new(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        self.model_id, self.values, self.errors, self.token_hint, self.running_note = 0, dict(EMPTY), {}, "", ""
        self.flags = {f: False for f in FLAGS}
        self.gguf_files = await asyncio.to_thread(self._gguf)
        self.memory_estimate = ""
        await self._read_hosts()
        await self._read_images()

    @rx.event
    async def open_edit(self):
        if await self._admin() is None:
            return rx.redirect("/login")  # the session ended (signed out elsewhere, expired)
        model_id = model_id_in(self.router.url.path)
        m = await asyncio.to_thread(crud.get_model, services().db, model_id)
        if m is None:
            return rx.redirect("/models")
        self.model_id, self.errors, self.running_note = m.id, {}, ""
        self.values = {f: _text(getattr(m, f)) for f in TEXT_FIELDS if f not in SPECIAL}
        self.values |= {"extra_args": " ".join(_quote(a) for a in m.extra_args), "extra_env": env_text(m.extra_env),
                        "request_defaults": json.dumps(m.request_defaults) if m.request_defaults else "",
                        "hf_token": "", "gpu_ids": ",".join(map(str, m.gpu_ids)) if m.gpu_ids else ""}
        self.flags = {f: bool(getattr(m, f)) for f in FLAGS}
        self.token_hint = mask_secret(m.hf_token)
        self.gguf_files = await asyncio.to_thread(self._gguf)
        try:
            host = "auto" if m.auto_host else (await asyncio.to_thread(hosts.get_host, services().db, m.host_id)).name
        except hosts.HostNotFound:
            host = ""
        await self._read_hosts(host)
        await self._estimate()
        await self._read_images()

    async def _estimate(self) -> None:
        svc = services()
        self.memory_estimate = await asyncio.to_thread(form_estimate, dict(self.values), svc.settings.models_dir,
                                                       svc.settings.hf_cache_dir)

    @rx.event
    async def set_value(self, field: str, value: str):
        # It reads files (the estimate) and the engine's images: a signed-in admin's tab only.
        if await self._admin() is None:
            return rx.redirect("/login")
        self.values[field] = "" if value == ENGINE_DEFAULT else value
        self.errors.pop(field, None)
        if field in ("image", "engine"):
            self._check_image()
        if field in ESTIMATED_FROM:
            await self._estimate()

    @rx.event
    def set_flag(self, field: str, value: bool):
        self.flags[field] = value

    @rx.event
    def toggle_advanced(self):
        self.show_advanced = not self.show_advanced

    @rx.event
    async def save(self):
        if await self._admin() is None:
            return rx.redirect("/login")
        data: dict = {k: v for k, v in self.values.items() if k not in ("hf_token", "extra_env")}
        env = parse_env_text(self.values.get("extra_env", ""))
        if isinstance(env, str):
            self.errors = {"extra_env": env}
            return
        svc = services()
        if self.model_id:
            stored = await asyncio.to_thread(crud.get_model, svc.db, self.model_id)
            env = unmask_env(env, stored.extra_env if stored else {})
        data["extra_env"] = env
        data |= self.flags
        if self.values.get("hf_token"):  # empty = keep the stored token
            data["hf_token"] = self.values["hf_token"]
        try:
            if self.model_id:
                m = await asyncio.to_thread(crud.update_model, svc.db, svc.settings, self.model_id, data)
            else:
                m = await asyncio.to_thread(crud.create_model, svc.db, svc.settings, data)
        except ConfigInvalid as exc:
            self.errors = exc.errors
            return rx.toast.error("nothing saved: fix the fields marked in red")
        return [rx.redirect(f"/models/{m.id}"),
                rx.toast.success(f"{m.name} saved" + (" — Apply to restart it with this" if self.model_id and
                                                      m.state.value in ("loading", "running") else ""))]


def _quote(arg: str) -> str:
    return shlex.quote(arg)


ESTIMATED_FROM = {"engine", "source", "device", "context_size", "gpu_layers", "cache_type_k", "cache_type_v",
                  "flash_attn", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype"}


def form_estimate(values: dict[str, str], models_dir: Path, hf_cache_dir: Optional[Path] = None) -> str:
    """The memory estimate as the form stands (memory.estimate_model, as the detail page and
    the API have it, of an unsaved row), or "" while there is none to show (no source named
    yet). Files that cannot be read say why."""
    def number(field: str):
        text = values.get(field, "").strip()
        return int(text) if text.isdigit() else None

    source = values.get("source", "").strip()
    if values.get("engine", "llamacpp") == "vllm":
        if not source:
            return ""
        if not vllm.is_hf_repo(source):  # a folder: only one inside the models dir is read
            try:
                source = "./" + model_relative_path(vllm.local_path(source), models_dir)
            except ValueError:
                return ""
        try:
            utilization = float(values.get("gpu_memory_utilization", "").strip() or 0) or None
        except ValueError:
            utilization = None
        draft = Model(engine=Engine.VLLM, source=source, tensor_parallel_size=number("tensor_parallel_size"),
                      gpu_memory_utilization=utilization, max_model_len=number("max_model_len"),
                      dtype=values.get("dtype") or None)
    else:
        try:
            rel = model_relative_path(source, models_dir)
        except ValueError:
            return ""
        if not rel.endswith(".gguf") or not (models_dir / rel).is_file():
            return ""
        draft = Model(engine=Engine.LLAMACPP, source=rel,
                      device=Device.CUDA if values.get("device") == "cuda" else Device.CPU,
                      context_size=number("context_size"), gpu_layers=number("gpu_layers"),
                      cache_type_k=values.get("cache_type_k") or None, cache_type_v=values.get("cache_type_v") or None,
                      flash_attn={"true": True, "false": False}.get(values.get("flash_attn", "")))
    try:
        return memory.estimate_model(draft, models_dir, hf_cache_dir).summary()
    except ValueError as exc:
        return f"none ({exc})"


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value.value if isinstance(value, enum.Enum) else value)
