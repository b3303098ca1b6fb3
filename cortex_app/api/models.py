"""The models over HTTP, for scripts: an admin's session, or an API token whose scope allows
the route (read: the GETs; operate: also start, stop, apply; admin: also create, edit, delete).

  GET    /api/models              every model with its state and health
  GET    /api/models/{id}         one model
  POST   /api/models              create (the form's fields as JSON; 422 names each bad field);
                                  `host`: a host's name or id, or "auto" (default: host 1)
  PUT    /api/models/{id}         replace its configuration (as the edit form does); a running
                                  model keeps its old config until applied (`stale`: true);
                                  `host` absent keeps its host; another host only while stopped
  DELETE /api/models/{id}         204; only a stopped or failed model (else 409)
  POST   /api/models/{id}/start   202: the container runs; `loading` -> `running` is the
                                  reconciler's to see (poll GET, as the Models page does);
                                  503 with the reason when it could not start (`failed`);
                                  409 with the numbers when a model on GPUs does not fit
                                  in their free memory (`?override_fit=true`, admin scope,
                                  starts it anyway)
  POST   /api/models/{id}/stop    stopped and its container removed
  POST   /api/models/{id}/apply   a running model restarts on its current config (202, loading)

Writes take the token only in the Authorization header (never from the cookie): a browser
never sends that header by itself, so no other page can forge a write.

The same checks and the same lifecycle as the pages (crud.py, lifecycle.py): a refused
action (wrong state) is 409 and changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response

from cortex_app import crud
from cortex_app.api.deps import Caller, read_caller, require_admin, require_operate, sees_engines
from cortex_app.engines import memory
from cortex_app.engines.vllm_memory import VllmEstimate
from cortex_app.lifecycle import DoesNotFit, Refused
from cortex_app.models import Model, ModelState
from cortex_app.runtime.docker import DockerRuntimeError
from cortex_app.services import get as services
from cortex_app.validation import ConfigInvalid

router = APIRouter()


def model_json(m: Model, engines: bool = True) -> dict:
    """What a script needs; never the HF token. Health only for a running model (a stopped one
    has none: the last probe's verdict would be stale). `engines`: where its engine listens
    (its published port and the address the console reaches it at), for operate and admin."""
    lc = services().lifecycle
    # Its container's id too: a console that reaches models by container name reaches them there.
    where = {"host_port": m.host_port, "address": lc.base_url(m), "container_id": m.container_id} if engines else {}
    return {"id": m.id, "name": m.name, "served_name": m.served_name, "alias": m.alias, "engine": m.engine.value,
            "image": m.image, "source": m.source, "host_id": m.host_id, "auto_host": m.auto_host,
            "state": m.state.value, "state_reason": m.state_reason,
            "request_defaults": m.request_defaults,
            "health": m.health.value if m.state == ModelState.RUNNING else None, **where,
            "stale": lc.is_stale(m), "memory_estimate_mib": m.memory_estimate_mib,
            "memory_used_mib": m.memory_used_mib}


def _not_found(model_id: int) -> JSONResponse:
    return JSONResponse({"detail": f"no model with id {model_id}"}, status_code=404)


@router.get("/api/models")
async def list_models(who: Caller = Depends(read_caller)) -> dict:
    rows = await asyncio.to_thread(crud.list_models, services().db)
    return {"models": [model_json(m, sees_engines(who)) for m in rows]}


def memory_json(m: Model) -> dict:
    """The memory estimate (engines/memory.py) in MiB, or why there is none."""
    settings = services().settings
    try:
        e = memory.estimate_model(m, settings.models_dir, settings.hf_cache_dir)
    except ValueError as exc:
        return {"error": str(exc)}
    if isinstance(e, VllmEstimate):
        return {"need_mib_per_gpu": round(e.need_mib, 1), "weights_mib_per_gpu": round(e.weights_mib, 1),
                "kv_mib_per_gpu": round(e.kv_mib, 1), "activations_mib": e.activations_mib,
                "gpu_memory_utilization": e.utilization, "gpus": e.gpus, "max_model_len": e.max_model_len,
                "on_gpu": True}
    return {"total_mib": round(e.total_mib, 1), "weights_mib": round(e.weights_mib, 1), "kv_mib": round(e.kv_mib, 1),
            "compute_mib": round(e.compute_mib, 1), "context": e.n_ctx, "on_gpu": e.on_gpu}


@router.get("/api/models/{model_id}")
async def get_model(model_id: int, who: Caller = Depends(read_caller)):
    """One model, with its memory estimate (the list leaves it out: it reads each GGUF)."""
    m = await asyncio.to_thread(crud.get_model, services().db, model_id)
    if m is None:
        return _not_found(model_id)
    return {**model_json(m, sees_engines(who)), "memory_estimate": await asyncio.to_thread(memory_json, m)}


@router.post("/api/models", status_code=201)
async def create_model(data: dict[str, Any] = Body(...), user: str = Depends(require_admin)):
    svc = services()
    try:
        m = await asyncio.to_thread(crud.create_model, svc.db, svc.settings, data)
    except ConfigInvalid as exc:
        return JSONResponse({"detail": "invalid model configuration", "errors": exc.errors}, status_code=422)
    return model_json(m)


@router.put("/api/models/{model_id}")
async def update_model(model_id: int, data: dict[str, Any] = Body(...), user: str = Depends(require_admin)):
    svc = services()
    try:
        m = await asyncio.to_thread(crud.update_model, svc.db, svc.settings, model_id, data)
    except LookupError:
        return _not_found(model_id)
    except ConfigInvalid as exc:
        return JSONResponse({"detail": "invalid model configuration", "errors": exc.errors}, status_code=422)
    return model_json(m)


@router.delete("/api/models/{model_id}")
async def delete_model(model_id: int, user: str = Depends(require_admin)):
    try:
        await asyncio.to_thread(services().lifecycle.delete, model_id, actor=_actor(user))
    except LookupError:
        return _not_found(model_id)
    except Refused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    return Response(status_code=204)


def _actor(user: str) -> str:
    """How the action came, for the model's events: `token:<name>`, or `admin:<user> (api)` for an
    admin's session over HTTP (the pages record `admin:<user> (browser)`)."""
    return user if user.startswith("token:") else f"{user} (api)"


async def _act(verb: str, model_id: int, user: str, status: int, **options) -> JSONResponse:
    lc = services().lifecycle
    call = {"start": lc.start, "stop": lc.stop, "apply": lc.apply}[verb]
    try:
        m = await asyncio.to_thread(call, model_id, actor=_actor(user), **options)
    except LookupError:
        return _not_found(model_id)
    except DoesNotFit as exc:
        return JSONResponse({"detail": str(exc), "fits": False,
                             "override": f"POST /api/models/{model_id}/{verb}?override_fit=true"}, status_code=409)
    except Refused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    except DockerRuntimeError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    if m.state.value == "failed":  # e.g. the image is missing: the lifecycle recorded why
        return JSONResponse({**model_json(m), "detail": m.state_reason}, status_code=503)
    return JSONResponse(model_json(m), status_code=status)


@router.post("/api/models/{model_id}/start")
async def start_model(request: Request, model_id: int, override_fit: bool = False,
                      user: str = Depends(require_operate)) -> JSONResponse:
    """`?override_fit=true`: start even though the fit check says the GPUs lack the memory
    (this once; the event records the override). An admin's decision: admin scope only."""
    if override_fit:
        user = await require_admin(request)
    return await _act("start", model_id, user, 202, **({"override_fit": True} if override_fit else {}))


@router.post("/api/models/{model_id}/stop")
async def stop_model(model_id: int, user: str = Depends(require_operate)) -> JSONResponse:
    return await _act("stop", model_id, user, 200)


@router.post("/api/models/{model_id}/apply")
async def apply_model(request: Request, model_id: int, override_fit: bool = False,
                      user: str = Depends(require_operate)) -> JSONResponse:
    """`?override_fit=true` (admin scope): apply although the new config does not fit."""
    if override_fit:
        user = await require_admin(request)
    return await _act("apply", model_id, user, 202, **({"override_fit": True} if override_fit else {}))
