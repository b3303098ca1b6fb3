"""Pure decisions of the gateway: which model a request goes to (for an alias, which of its
replicas; or the OpenAI-shaped error that says why none), and what the request becomes on its
way (the model's defaults, the usage the meter needs). No I/O here; table tests in
tests/unit/test_gateway_routing.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Optional

LOADING_RETRY_AFTER_S = 5
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}


HOST_UNREACHABLE = "host-unreachable"  # a Route's health while its host's engine does not answer


@dataclass(frozen=True)
class Route:
    """A model as the gateway sees it, from the snapshot of the model table."""

    model_id: int
    name: str
    served_name: str
    state: str  # ModelState value
    state_reason: str
    health: str  # Health value
    base_url: Optional[str]  # where its server answers (None: no address yet)
    container_id: Optional[str]
    defaults: dict = field(default_factory=dict)
    alias: Optional[str] = None  # a public name it shares with other replicas


@dataclass(frozen=True)
class Snapshot:
    """The model table as the gateway routes on it: each model by its served name, and the
    replicas of each alias (a name is one or the other: validation keeps them apart)."""

    routes: dict[str, Route] = field(default_factory=dict)
    aliases: dict[str, list[Route]] = field(default_factory=dict)

    @classmethod
    def of(cls, routes: list[Route]) -> "Snapshot":
        aliases: dict[str, list[Route]] = {}
        for r in routes:
            if r.alias:
                aliases.setdefault(r.alias, []).append(r)
        return cls({r.served_name: r for r in routes}, aliases)

    def listed(self) -> list[str]:
        """What GET /v1/models lists: every servable model, and every alias with a servable replica."""
        names = {r.served_name for r in self.routes.values() if servable(r)}
        names |= {a for a, replicas in self.aliases.items() if any(servable(r) for r in replicas)}
        return sorted(names)


class GatewayError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: Optional[str] = None, retry_after: Optional[float] = None, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.retry_after, self.param = retry_after, param

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def headers(self) -> list[tuple[bytes, bytes]]:
        h = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            h.append((b"retry-after", str(max(1, int(self.retry_after + 0.999))).encode()))
        if self.status == 401:
            h.append((b"www-authenticate", b"Bearer"))
        return h


def error_body(message: str, type_: str, code: Optional[str] = None, param: Optional[str] = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def servable(route: Route) -> bool:
    """Gets traffic (and is listed by GET /v1/models): running, not unhealthy, reachable."""
    return (route.state == "running" and route.health not in ("unhealthy", HOST_UNREACHABLE)
            and route.base_url is not None)


def pick(routes: dict[str, Route], served_name: Any) -> Route:
    """The route for the `model` a client named, or the GatewayError that refuses it. Never
    starts anything: a stopped model stays stopped until an admin starts it."""
    if not isinstance(served_name, str) or not served_name:
        raise GatewayError(400, "`model` is required: the served name of a running model (GET /v1/models)",
                           param="model", code="model_required")
    route = routes.get(served_name)
    if route is None:
        raise GatewayError(404, f"the model `{served_name}` does not exist", param="model", code="model_not_found")
    if route.state == "loading":
        raise GatewayError(503, f"the model `{served_name}` is loading; try again shortly", "service_unavailable",
                           "model_loading", retry_after=LOADING_RETRY_AFTER_S)
    if route.state in ("stopped", "failed", "stopping"):
        why = f" ({route.state_reason})" if route.state == "failed" and route.state_reason else ""
        raise GatewayError(503, f"the model `{served_name}` is {route.state}{why}: an admin must start it in the "
                           "console (the gateway never starts a model)", "service_unavailable", "model_not_running")
    if route.health == "unhealthy":
        raise GatewayError(503, f"the model `{served_name}` is running but failing its health checks",
                           "service_unavailable", "model_unhealthy")
    if route.health == HOST_UNREACHABLE:
        raise GatewayError(503, f"the model `{served_name}` runs on a host that does not answer now",
                           "service_unavailable", "host_unreachable")
    if route.base_url is None:
        raise GatewayError(503, f"the model `{served_name}` has no address yet", "service_unavailable",
                           "model_unreachable")
    return route


def choose(snapshot: Snapshot, name: Any, inflight: Mapping[int, int], last: Mapping[int, int],
           avoid: Collection[int] = ()) -> Route:
    """The route for the `model` a client named. A served name: that model (pick). An alias:
    of its servable replicas not in `avoid` (ones that just failed), the one with the fewest
    requests in flight; among equals, the one picked longest ago (`last`: a sequence number per
    model id), so one client's requests in turn go round them. Never starts anything."""
    replicas = snapshot.aliases.get(name) if isinstance(name, str) else None
    if not replicas:
        return pick(snapshot.routes, name)
    ready = [r for r in replicas if servable(r) and r.model_id not in avoid]
    if ready:
        return min(ready, key=lambda r: (inflight.get(r.model_id, 0), last.get(r.model_id, -1), r.model_id))
    states = sorted({r.state for r in replicas})
    if any(r.state == "loading" for r in replicas):
        raise GatewayError(503, f"no replica of `{name}` is ready yet (loading); try again shortly",
                           "service_unavailable", "model_loading", retry_after=LOADING_RETRY_AFTER_S)
    if any(r.state == "running" for r in replicas):
        raise GatewayError(503, f"no replica of `{name}` is answering: the running ones are failing their health "
                           "checks or did not take the connection", "service_unavailable", "model_unhealthy")
    raise GatewayError(503, f"no replica of `{name}` is running ({', '.join(states)}): an admin must start one in "
                       "the console (the gateway never starts a model)", "service_unavailable", "model_not_running")


@dataclass(frozen=True)
class Prepared:
    body: dict
    stream: bool
    client_wants_usage: bool  # a stream whose client asked for the usage chunk itself


def prepare(body: dict, endpoint: str, defaults: dict) -> Prepared:
    """The request as the engine gets it: the model's defaults where the client set nothing,
    and, for a stream, the usage chunk asked for (the meter needs it; stripped again before the
    client sees it unless the client asked too)."""
    if "stream" in body and not isinstance(body["stream"], bool):
        raise GatewayError(400, "`stream` must be true or false", param="stream", code="invalid_type")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise GatewayError(400, "`stream_options` must be an object", param="stream_options", code="invalid_type")
    out = dict(body)
    if endpoint != "embeddings":
        for k, v in defaults.items():
            if k not in out:
                out[k] = v
    stream = endpoint != "embeddings" and out.get("stream") is True
    wants = False
    if stream:
        opts = out.get("stream_options")
        wants = isinstance(opts, dict) and opts.get("include_usage") is True
        if not wants:
            out["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return Prepared(out, stream, wants)


def usage_of(payload: Any) -> Optional[tuple[int, int]]:
    """(prompt, completion) tokens from a response or chunk's `usage`, if it has one."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    return (p, c or 0) if isinstance(p, int) else None


def is_usage_only(payload: Any) -> bool:
    """The chunk `stream_options.include_usage` adds: usage and no choices."""
    return isinstance(payload, dict) and payload.get("usage") is not None and not payload.get("choices")
