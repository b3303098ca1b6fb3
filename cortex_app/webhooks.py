"""Webhooks: the outbox of events for other systems, signed per Standard Webhooks.

- `enqueue_*` write delivery rows inside the caller's transaction (the one that records the
  state change), so a crash can never lose a delivery.
- `Deliverer.deliver_due()` (a scheduler job, leader only) sends what is due: endpoints and
  models concurrently, and for one (endpoint, model) strictly in order, stopping at the first
  failure so a later event never overtakes an earlier one. Every attempt is recorded;
  failures are retried with capped backoff over about an hour, then given up.
- Signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256
  of "id.timestamp.body">` with the endpoint's `whsec_` secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ipaddress
import logging
import re
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app.models import (EventKind, Model, ModelState, WebhookAttempt, WebhookDelivery, WebhookEndpoint,
                               utcnow)

log = logging.getLogger(__name__)

EVENT_TYPES = ("model.running", "model.stopped", "model.failed", "model.unhealthy", "model.healthy",
               "engine.unreachable", "engine.reachable", "host.unreachable", "host.reachable", "console.started")
FORMATS = ("standard", "slack")
# Retry delays after attempt 1, 2, ...: about 54 minutes in all, then the delivery is given up.
BACKOFF_S = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1200)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 64 * 1024  # read no more of a receiver's answer than this
STATE_EVENTS = {ModelState.RUNNING: "model.running", ModelState.STOPPED: "model.stopped",
                ModelState.FAILED: "model.failed"}


class EndpointInvalid(ValueError):
    pass


# Set by the scheduler in the process that delivers: called (from any thread) after a
# transaction that added deliveries has committed, so they go out at once instead of at the
# next poll. Other processes' deliveries are found by the poll.
_wake: Optional[Callable[[], None]] = None


def set_waker(fn: Optional[Callable[[], None]]) -> None:
    global _wake
    _wake = fn


def wake() -> None:
    if _wake is not None:
        _wake()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# Cloud metadata services (instance credentials): never a webhook's target. Most answer on a
# link-local address (169.254.169.254, fe80::/10); these do elsewhere (AWS over IPv6, Alibaba,
# Azure's WireServer).
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset(map(ipaddress.ip_address, ("fd00:ec2::254", "100.100.100.200", "168.63.129.16")))


def _address(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address a host literal means, in every form a resolver takes (2852039166, 0xa9fea9fe,
    0251.0376.0251.0376 and 169.254.169.254 alike); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # not an address (ValueError: a NUL in it)
        return None


def forbidden_host(host: str) -> Optional[str]:
    """Why a webhook may not go to `host` (None: it may)."""
    host = host.lower().rstrip(".")
    if host in METADATA_HOSTS:
        return "a cloud metadata service"
    ip = _address(host)
    if ip is not None and isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip is not None and (ip.is_link_local or ip in METADATA_ADDRESSES):
        return "a link-local address (where cloud metadata services answer)"
    return None


async def forbidden_target(host: str) -> Optional[str]:
    """forbidden_host, also for every address a host name resolves to now (a name of one's
    own pointed at 169.254.169.254 is refused too; a resolver error is left to the send)."""
    if why := forbidden_host(host):
        return why
    if _address(host.rstrip(".")) is not None:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return None
    return next((why for *_, addr in infos if (why := forbidden_host(str(addr[0]).split("%", 1)[0]))), None)


def check_url(url: str) -> str:
    url = (url or "").strip()
    try:
        httpx.URL(url)  # what the sender will use must accept it too
    except (httpx.InvalidURL, TypeError, ValueError):
        raise EndpointInvalid("the URL is not valid") from None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointInvalid("the URL must start with http:// or https:// and name a host")
    if len(url) > 2048:
        raise EndpointInvalid("the URL is longer than 2048 characters")
    if why := forbidden_host(parts.hostname):
        raise EndpointInvalid(f"the URL points at {why}; webhooks may not go there")
    return url


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def event_type_for(kind: EventKind, to_state: ModelState, reason: str) -> Optional[str]:
    if kind == EventKind.STATE:
        return STATE_EVENTS.get(to_state)
    if kind == EventKind.HEALTH:
        return "model.unhealthy" if reason.startswith("unhealthy") else "model.healthy"
    return None


def _exit_code(reason: str) -> Optional[int]:
    m = re.search(r"exited with code (-?\d+)", reason)
    return int(m.group(1)) if m else None


def payload(fmt: str, event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    if fmt == "slack":
        who = f"model *{data['name']}*" if data.get("name") else "Cortex"
        icon = {"model.failed": ":red_circle:", "model.unhealthy": ":warning:", "engine.unreachable": ":red_circle:",
                "host.unreachable": ":red_circle:",
                "model.running": ":large_green_circle:", "model.healthy": ":large_green_circle:"}.get(event_type,
                                                                                                      ":information_source:")
        line = f"{icon} {who}: {event_type.split('.', 1)[1]}"
        if data.get("reason"):
            line += f" — {data['reason']}"
        if data.get("url"):
            line += f" (<{data['url']}|open>)"
        return {"text": line}
    return {"type": event_type, "timestamp": at.isoformat(), "data": data}


def enqueue(session: Session, event_type: str, data: dict[str, Any], *, model_id: Optional[int] = None,
            at: Optional[datetime] = None) -> int:
    """Add a delivery for every enabled endpoint that wants this event (in `session`'s
    transaction; the caller commits). Returns how many."""
    at = at or utcnow()
    n = 0
    for ep in session.exec(select(WebhookEndpoint).where(WebhookEndpoint.enabled == True)).all():  # noqa: E712
        if event_type not in (ep.event_types or []):
            continue
        if ep.model_ids is not None and model_id not in ep.model_ids:
            continue
        session.add(WebhookDelivery(endpoint_id=ep.id, message_id=f"msg_{uuid.uuid4().hex}", event_type=event_type,
                                    model_id=model_id, payload=payload(ep.payload_format, event_type, at, data),
                                    next_attempt_at=at, created_at=at))
        n += 1
    return n


def model_event_data(*, model_id: int, name: str, served_name: str, engine: str, previous: Optional[ModelState],
                     state: ModelState, reason: str, public_url: str) -> dict[str, Any]:
    return {"model_id": model_id, "name": name, "served_name": served_name, "engine": engine,
            "previous_state": previous.value if previous else None, "state": state.value, "reason": reason,
            "exit_code": _exit_code(reason), "url": f"{public_url.rstrip('/')}/models/{model_id}"}


def enqueue_system(db: sa.Engine, event_type: str, reason: str, public_url: str) -> int:
    """engine.* and console.* events: no model, their own transaction."""
    with Session(db) as session:
        n = enqueue(session, event_type, {"reason": reason, "url": public_url})
        session.commit()
    if n:
        wake()
    return n


# --- delivery ---------------------------------------------------------------------------

@dataclass
class Outcome:
    ok: bool
    status_code: Optional[int]
    latency_ms: float
    error: Optional[str]


async def send(client: httpx.AsyncClient, url: str, secret: Optional[str], message_id: str, body: dict) -> Outcome:
    if not secret:  # sealed with another key (secretbox.py): nothing to sign with
        return Outcome(False, None, 0.0, "its signing secret cannot be read with this console's secret key: "
                                         "rotate the secret on the Settings page")
    raw = json.dumps(body, separators=(",", ":")).encode()
    ts = int(time.time())
    headers = {"content-type": "application/json", "webhook-id": message_id, "webhook-timestamp": str(ts),
               "webhook-signature": sign(secret, message_id, ts, raw), "user-agent": "Cortex-Webhooks"}
    t0 = time.perf_counter()
    try:
        # Again at each send: an endpoint saved before the check, or a name that resolves there.
        if why := await forbidden_target(urlsplit(url).hostname or ""):
            return Outcome(False, None, 0.0, f"refused: the URL points at {why}")
        async with asyncio.timeout(TIMEOUT_S):
            async with client.stream("POST", url, content=raw, headers=headers) as r:
                seen = 0
                async for chunk in r.aiter_raw():
                    seen += len(chunk)
                    if seen >= MAX_RESPONSE_BYTES:
                        break  # a huge answer is not our business; the status code is
                code = r.status_code
    except Exception as exc:  # noqa: BLE001 - whatever goes wrong is this attempt's recorded error
        kind = "timed out" if isinstance(exc, (TimeoutError, httpx.TimeoutException)) else type(exc).__name__
        return Outcome(False, None, (time.perf_counter() - t0) * 1000, f"{kind}: {exc}"[:300] if str(exc) else kind)
    latency = (time.perf_counter() - t0) * 1000
    ok = 200 <= code < 300
    return Outcome(ok, code, latency, None if ok else f"HTTP {code}")


class Deliverer:
    def __init__(self, db: sa.Engine, *, concurrency: int = 32):
        self.db = db
        self.gate = asyncio.Semaphore(concurrency)
        self.counts = {"delivered": 0, "retry": 0, "failed": 0}

    def _due_groups(self, now: datetime) -> list[list[tuple[WebhookDelivery, WebhookEndpoint]]]:
        """Pending deliveries by (endpoint, model), oldest first; a group whose oldest is not due
        waits whole (order within a model is kept)."""
        with Session(self.db, expire_on_commit=False) as s:
            rows = s.exec(select(WebhookDelivery, WebhookEndpoint)
                          .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                          .where(WebhookDelivery.status == "pending", WebhookEndpoint.enabled == True)  # noqa: E712
                          .order_by(WebhookDelivery.id).limit(5000)).all()
        groups: dict[tuple, list] = {}
        for d, ep in rows:
            groups.setdefault((d.endpoint_id, d.model_id), []).append((d, ep))
        return [g for g in groups.values() if g[0][0].next_attempt_at <= now]

    def _record(self, d: WebhookDelivery, out: Outcome) -> str:
        now = utcnow()
        attempts = d.attempts + 1
        if out.ok:
            status, nxt = "delivered", d.next_attempt_at
        elif attempts >= MAX_ATTEMPTS:
            status, nxt = "failed", d.next_attempt_at
        else:
            status, nxt = "pending", now + timedelta(seconds=BACKOFF_S[attempts - 1])
        with Session(self.db) as s:
            s.add(WebhookAttempt(delivery_id=d.id, at=now, status_code=out.status_code, latency_ms=out.latency_ms,
                                 error=out.error))
            s.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == d.id).values(
                status=status, attempts=attempts, next_attempt_at=nxt, last_status_code=out.status_code,
                last_error=out.error, last_latency_ms=out.latency_ms,
                delivered_at=now if out.ok else None))
            s.commit()
        outcome = "delivered" if out.ok else ("failed" if status == "failed" else "retry")
        self.counts[outcome] += 1
        return outcome

    async def _group(self, client: httpx.AsyncClient, group: list) -> None:
        async with self.gate:
            for d, ep in group:
                if d.next_attempt_at > utcnow():
                    return
                out = await send(client, ep.url, ep.secret, d.message_id, d.payload)
                try:
                    outcome = await asyncio.to_thread(self._record, d, out)
                except Exception as exc:  # noqa: BLE001 - e.g. the endpoint was deleted meanwhile
                    log.warning("webhook %s: could not record delivery %s: %s", d.event_type, d.id, exc)
                    return
                if outcome != "delivered":
                    if outcome == "retry":
                        # The host only: a Slack-style URL is itself a credential.
                        log.info("webhook %s to endpoint %s (%s): %s; retrying", d.event_type, ep.id,
                                 urlsplit(ep.url).hostname, out.error)
                    return  # later events of this model wait for this one

    async def deliver_due(self) -> int:
        groups = await asyncio.to_thread(self._due_groups, utcnow())
        if not groups:
            return 0
        async with httpx.AsyncClient(follow_redirects=False) as client:
            # Every group ends before the client closes; one group's error is not the others'.
            results = await asyncio.gather(*(self._group(client, g) for g in groups), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("webhook delivery round: %s", r)
        return sum(len(g) for g in groups)


def redeliver(db: sa.Engine, delivery_id: int) -> bool:
    """Send a delivery again (same message id, so receivers can still drop a duplicate);
    False when there is no such delivery."""
    with Session(db) as s:
        found = s.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
            status="pending", attempts=0, next_attempt_at=utcnow())).rowcount
        s.commit()
    wake()
    return bool(found)


def model_ids_named(db: sa.Engine, names: str) -> Optional[list[int]]:
    """The ids of the models named in `names` (comma-separated, as the Settings form takes
    them); None (every model) for none. EndpointInvalid names the models that do not exist."""
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    if not wanted:
        return None
    with Session(db) as s:
        found = dict(s.exec(select(Model.name, Model.id).where(Model.name.in_(wanted))).all())
    if missing := [n for n in wanted if n not in found]:
        raise EndpointInvalid("no model named " + ", ".join(repr(n) for n in missing)
                              + " (the filter takes model names, comma-separated; empty = every model)")
    return sorted({found[n] for n in wanted})


def create_endpoint(db: sa.Engine, *, url: str, event_types: list[str], payload_format: str = "standard",
                    model_ids: Optional[list[int]] = None) -> WebhookEndpoint:
    """Returns the endpoint with its secret: the one time the secret is shown."""
    url = check_url(url)
    bad = [e for e in event_types if e not in EVENT_TYPES]
    if bad or not event_types:
        raise EndpointInvalid(f"unknown event types: {', '.join(bad)}" if bad else "subscribe to at least one event")
    if payload_format not in FORMATS:
        raise EndpointInvalid(f"payload format must be one of: {', '.join(FORMATS)}")
    with Session(db, expire_on_commit=False) as s:
        ep = WebhookEndpoint(url=url, secret=new_secret(), event_types=list(event_types), model_ids=model_ids,
                             payload_format=payload_format)
        s.add(ep)
        s.commit()
        return ep


def rotate_secret(db: sa.Engine, endpoint_id: int) -> str:
    secret = new_secret()
    with Session(db) as s:
        s.execute(sa.update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(secret=secret))
        s.commit()
    return secret


def get_endpoint(db: sa.Engine, endpoint_id: int) -> Optional[WebhookEndpoint]:
    with Session(db, expire_on_commit=False) as s:
        return s.get(WebhookEndpoint, endpoint_id)


def toggle_endpoint(db: sa.Engine, endpoint_id: int) -> None:
    """Enable or disable; a disabled endpoint's pending deliveries wait (see _due_groups)."""
    with Session(db) as s:
        s.execute(sa.update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                  .values(enabled=~WebhookEndpoint.enabled))
        s.commit()


def delete_endpoint(db: sa.Engine, endpoint_id: int) -> None:
    """The endpoint with its deliveries and their attempts (cascading foreign keys)."""
    with Session(db) as s:
        s.execute(sa.delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(
            select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id))))
        s.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
        s.execute(sa.delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
        s.commit()


async def send_ping(db: sa.Engine, endpoint: WebhookEndpoint) -> Outcome:
    """A test delivery, sent now and logged like any other (event `ping`, one attempt; a
    failed one is not retried, but Redeliver sends it again)."""
    message_id = f"msg_{uuid.uuid4().hex}"
    body = payload(endpoint.payload_format, "ping", utcnow(), {"reason": "test delivery from Cortex"})
    async with httpx.AsyncClient() as client:
        out = await send(client, endpoint.url, endpoint.secret, message_id, body)
    await asyncio.to_thread(_log_ping, db, endpoint.id, message_id, body, out)
    return out


def _log_ping(db: sa.Engine, endpoint_id: int, message_id: str, body: dict, out: Outcome) -> None:
    now = utcnow()
    with Session(db) as s:
        d = WebhookDelivery(endpoint_id=endpoint_id, message_id=message_id, event_type="ping", payload=body,
                            status="delivered" if out.ok else "failed", attempts=1, next_attempt_at=now,
                            last_status_code=out.status_code, last_error=(out.error or "")[:500] or None,
                            last_latency_ms=out.latency_ms, delivered_at=now if out.ok else None)
        s.add(d)
        s.flush()
        s.add(WebhookAttempt(delivery_id=d.id, at=now, status_code=out.status_code, latency_ms=out.latency_ms,
                             error=(out.error or "")[:500] or None))
        s.commit()
