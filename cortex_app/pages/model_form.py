"""Create / edit form: engine first, then the fields it uses; the rest under Advanced."""

from __future__ import annotations

import reflex as rx

from cortex_app.components.images import follow_pulls, image_status
from cortex_app.components.layout import page
from cortex_app.components.prose import prose
from cortex_app.states.model_form import ENGINE_DEFAULT, ModelFormState as F
from cortex_app.validation import CACHE_TYPES


def field(name: str, label: str, hint: str = "", kind: str = "text", placeholder: str = "") -> rx.Component:
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.input(value=F.values[name], on_change=lambda v: F.set_value(name, v), type=kind, width="100%",
                 placeholder=placeholder, id=f"field-{name}"),
        rx.cond(F.errors.contains(name),
                rx.text(F.errors[name], size="1", color_scheme="red", class_name="field-error",
                        id=f"error-{name}"),
                prose(hint, size="1", color_scheme="gray")),
        spacing="1", width="100%",
    )


def choice(name: str, label: str, options, engine_default: bool = False) -> rx.Component:
    """A select (`options`: a list, or a state var holding one); with `engine_default`, its
    first choice leaves the setting to the engine."""
    items = [ENGINE_DEFAULT, *options] if engine_default else options
    value = rx.cond(F.values[name] == "", ENGINE_DEFAULT, F.values[name]) if engine_default else F.values[name]
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.select(items, value=value, on_change=lambda v: F.set_value(name, v), id=f"field-{name}"),
        rx.cond(F.errors.contains(name), rx.text(F.errors[name], size="1", color_scheme="red",
                                                 class_name="field-error")),
        spacing="1",
    )


def tristate(name: str, label: str) -> rx.Component:
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.select.root(rx.select.trigger(id=f"field-{name}"),
                       rx.select.content(rx.select.item(ENGINE_DEFAULT, value=ENGINE_DEFAULT),
                                         rx.select.item("on", value="true"), rx.select.item("off", value="false")),
                       value=rx.cond(F.values[name] == "", ENGINE_DEFAULT, F.values[name]),
                       on_change=lambda v: F.set_value(name, v)),
        spacing="1",
    )


def flag(name: str, label: str) -> rx.Component:
    return rx.checkbox(label, checked=F.flags[name], on_change=lambda v: F.set_flag(name, v), id=f"flag-{name}")


def textarea(name: str, label: str, hint: str) -> rx.Component:
    return rx.vstack(
        rx.text(label, size="2", weight="medium"),
        rx.text_area(value=F.values[name], on_change=lambda v: F.set_value(name, v), width="100%", rows="3",
                     id=f"field-{name}"),
        rx.cond(F.errors.contains(name), rx.text(F.errors[name], size="1", color_scheme="red",
                                                 class_name="field-error", id=f"error-{name}"),
                rx.text(hint, size="1", color_scheme="gray")),
        spacing="1", width="100%",
    )


def _llamacpp_common() -> rx.Component:
    return rx.grid(
        rx.vstack(
            rx.text("GGUF file", size="2", weight="medium"),
            rx.input(value=F.values["source"], on_change=lambda v: F.set_value("source", v), list="gguf-files",
                     width="100%", id="field-source", placeholder="path under the models dir"),
            rx.el.datalist(rx.foreach(F.gguf_files, lambda f: rx.el.option(value=f)), id="gguf-files"),
            rx.cond(F.errors.contains("source"),
                    rx.text(F.errors["source"], size="1", color_scheme="red", class_name="field-error",
                            id="error-source"),
                    rx.text(F.gguf_files.length().to_string()
                            + rx.cond(F.gguf_files.length() == 1, " GGUF file", " GGUF files")
                            + " found in the models dir", size="1", id="gguf-count",
                            color_scheme="gray")),
            spacing="1", width="100%",
        ),
        field("context_size", "Context size", "tokens; empty = the model's default"),
        field("gpu_layers", "GPU layers", "0-999; empty = all on CUDA, none on CPU"),
        field("parallel_slots", "Parallel slots"),
        columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%",
    )


def _vllm_common() -> rx.Component:
    return rx.grid(
        field("source", "Model", "a Hugging Face repo id (org/name) or ./folder in the models dir"),
        field("max_model_len", "Max model length", "tokens"),
        field("gpu_memory_utilization", "GPU memory utilisation", "0.05-1.0"),
        field("tensor_parallel_size", "Tensor parallel size"),
        rx.vstack(
            rx.text("HF token", size="2", weight="medium"),
            rx.input(value=F.values["hf_token"], on_change=lambda v: F.set_value("hf_token", v), type="password",
                     placeholder=rx.cond(F.token_hint != "", "set (" + F.token_hint + "); type to replace",
                                         "for gated repos"), width="100%", id="field-hf_token"),
            rx.cond(F.errors.contains("hf_token"), rx.text(F.errors["hf_token"], size="1", color_scheme="red")),
            spacing="1", width="100%",
        ),
        columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%",
    )


def _advanced() -> rx.Component:
    return rx.vstack(
        rx.cond(
            F.is_llamacpp,
            rx.grid(field("threads", "Threads"), choice("cache_type_k", "K cache type", CACHE_TYPES, engine_default=True),
                    choice("cache_type_v", "V cache type", CACHE_TYPES, engine_default=True),
                    tristate("flash_attn", "Flash attention"), flag("embeddings", "Embeddings endpoint"),
                    columns=rx.breakpoints(initial="1", md="3"), spacing="4", width="100%"),
            rx.grid(choice("dtype", "dtype", ["auto", "half", "float16", "bfloat16", "float", "float32"]),
                    field("quantization", "Quantization", "awq, gptq, fp8, …"),
                    field("max_num_seqs", "Max sequences"), tristate("enable_prefix_caching", "Prefix caching"),
                    flag("enforce_eager", "Enforce eager"), flag("trust_remote_code", "Trust remote code"),
                    columns=rx.breakpoints(initial="1", md="3"), spacing="4", width="100%"),
        ),
        rx.grid(field("image", "Image", "empty = the engine's default image"),
                field("gpu_ids", "GPU indices", "e.g. 0,1; empty = all (device cuda only)"),
                field("startup_timeout_s", "Startup timeout (s)"),
                columns=rx.breakpoints(initial="1", md="3"), spacing="4", width="100%"),
        textarea("extra_args", "Extra flags", "passed verbatim as arguments (never through a shell)"),
        textarea("extra_env", "Extra environment", "one NAME=value per line"),
        textarea("request_defaults", "Gateway request defaults",
                 'JSON, used where a request through /v1 sets nothing, e.g. {"temperature": 0.7, "max_tokens": 512}'),
        rx.hstack(flag("start_on_boot", "Start when the console starts"),
                  flag("restart_on_failure", "Restart on failure (3 tries, backoff)"), spacing="5"),
        textarea("notes", "Notes", ""),
        spacing="4", width="100%",
    )


def model_form() -> rx.Component:
    return page(
        F.title,
        follow_pulls(),
        rx.card(rx.vstack(
            rx.grid(choice("engine", "Engine", ["llamacpp", "vllm"]), field("name", "Name", "lowercase, digits, -"),
                    field("served_name", "Served name", "what clients send as `model`; empty = the name"),
                    choice("device", "Device", ["cpu", "cuda"]), columns=rx.breakpoints(initial="1", md="4"), spacing="4", width="100%"),
            rx.grid(choice("host", "Host (auto: the one with room, chosen at each Start; moves only while stopped)",
                           F.host_choices), columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"),
            field("alias", "Alias (optional)", "a public name replicas share: the gateway spreads requests for it "
                  "across the running ones"),
            rx.cond(F.is_llamacpp, _llamacpp_common(), _vllm_common()),
            rx.cond(F.image_here.contains("image"),
                    rx.hstack(rx.text("Image", size="2", weight="medium"), rx.code(F.image_here["image"], size="1"),
                              image_status(F.image_here["image"].to(str), F.image_here["present"].to(bool)),
                              spacing="3", align="center", id="form-image", wrap="wrap")),
            rx.cond(F.memory_estimate != "", rx.text("Estimate: ", F.memory_estimate, size="2", id="form-estimate")),
            rx.button(rx.cond(F.show_advanced, "Hide advanced", "Advanced"), variant="ghost", size="1",
                      on_click=F.toggle_advanced, id="toggle-advanced"),
            rx.cond(F.show_advanced, _advanced()),
            rx.cond(F.errors.length() > 0, rx.callout("Fix the fields marked in red; nothing was saved.",
                                                      icon="triangle_alert", color_scheme="red", size="1",
                                                      id="form-invalid")),
            rx.hstack(rx.button("Save", on_click=F.save, id="save"),
                      rx.link(rx.button("Cancel", variant="soft", color_scheme="gray"), href="/models"), spacing="3"),
            spacing="4", width="100%",
        ), width="100%"),
    )
