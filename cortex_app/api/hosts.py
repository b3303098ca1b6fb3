"""The hosts over HTTP (the Hosts page's own calls, for scripts): read to list, operate to
check one, admin to add or remove.

  GET    /api/hosts              every host with its state (never a credential)
  POST   /api/hosts              add: {name, endpoint, address?, models_dir?, hf_cache_dir?,
                                 tls_ca, tls_cert, tls_key} for
                                 tcp:// (TLS), {name, endpoint, address?, ssh_key, ssh_host_key?}
                                 for ssh://; the connection is checked first: 422 with what
                                 failed (`problem`: unreachable | tls | auth | host-key |
                                 not-docker | host-key-unconfirmed, with `seen_host_key`:
                                 send it as ssh_host_key once compared) and nothing saved;
                                 a check also knows
                                 secret-key (its credentials cannot be read with this
                                 console's secret key)
  POST   /api/hosts/{id}/check   ask its engine now; the host with what was found
  DELETE /api/hosts/{id}         204; host 1 (the console's DOCKER_HOST) is 409
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse, Response

from cortex_app import hosts
from cortex_app.api.deps import Caller, read_caller, require_admin, require_operate, sees_engines
from cortex_app.services import get as services

router = APIRouter()
FIELDS = ("name", "endpoint", "address", "models_dir", "hf_cache_dir", "tls_ca", "tls_cert", "tls_key", "ssh_key", "ssh_host_key")


def _not_found(host_id: int) -> JSONResponse:
    return JSONResponse({"detail": f"no host with id {host_id}"}, status_code=404)


@router.get("/api/hosts")
async def list_hosts(who: Caller = Depends(read_caller)) -> dict:
    svc = services()
    rows = await asyncio.to_thread(hosts.list_hosts, svc.db)
    return {"hosts": [hosts.host_json(h, svc.settings, engines=sees_engines(who)) for h in rows]}


@router.post("/api/hosts", status_code=201)
async def add_host(data: dict[str, Any] = Body(...), user: str = Depends(require_admin)):
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        return JSONResponse({"detail": f"unknown field(s): {', '.join(unknown)}; known: {', '.join(FIELDS)}"},
                            status_code=422)
    if any(not isinstance(v, str) for v in data.values()):
        return JSONResponse({"detail": "every field is a string"}, status_code=422)
    svc = services()
    try:
        row = await asyncio.to_thread(hosts.add_host, svc.db, svc.settings, name=data.get("name", ""),
                                      endpoint_url=data.get("endpoint", ""), address=data.get("address", ""),
                                      models_dir=data.get("models_dir", ""), hf_cache_dir=data.get("hf_cache_dir", ""),
                                      tls_ca=data.get("tls_ca", ""), tls_cert=data.get("tls_cert", ""),
                                      tls_key=data.get("tls_key", ""), ssh_key=data.get("ssh_key", ""),
                                      ssh_host_key=data.get("ssh_host_key", ""))
    except hosts.HostInvalid as exc:
        seen = {"seen_host_key": exc.seen_host_key} if exc.seen_host_key else {}
        return JSONResponse({"detail": str(exc), "problem": exc.problem, **seen}, status_code=422)
    await svc.scheduler.hosts_changed()  # its event stream followed at once
    return hosts.host_json(row, svc.settings)


@router.post("/api/hosts/{host_id}/check")
async def check_host(host_id: int, user: str = Depends(require_operate)):
    svc = services()
    try:
        row = await asyncio.to_thread(hosts.check_on_demand, svc.db, svc.settings, host_id)
    except hosts.HostNotFound:
        return _not_found(host_id)
    return hosts.host_json(row, svc.settings)


@router.delete("/api/hosts/{host_id}")
async def remove_host(host_id: int, user: str = Depends(require_admin)):
    try:
        svc = services()
        await asyncio.to_thread(hosts.remove_host, svc.db, svc.settings, host_id, svc.runtime.instance)
        svc.lifecycle.runtimes.forget(host_id)
        await svc.scheduler.hosts_changed()
    except hosts.HostNotFound:
        return _not_found(host_id)
    except hosts.HostInvalid as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    return Response(status_code=204)
