"""Monitoring: GET /api/ready (can this console do its job right now) and GET /metrics
(Prometheus text; needs an API token unless CORTEX_METRICS_PUBLIC=true)."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlmodel import Session, func, select

from cortex_app import auth
from cortex_app.api.deps import require_read
from cortex_app.models import Health, Model, ModelState, WebhookDelivery
from cortex_app.runtime.docker import engine_info
from cortex_app.services import get as services

router = APIRouter()


def _checks() -> dict[str, str]:
    """Each check's result: 'ok' or what is wrong."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except sa.exc.SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {str(exc).splitlines()[0][:200]}"
    info = engine_info(svc.settings.docker_host)
    checks["docker"] = "ok" if info.reachable else (info.error or "unreachable")
    sched = svc.scheduler
    if not sched.running:
        checks["scheduler"] = "not running"
    elif sched.lease.is_leader:
        report = svc.reconciler.last_report
        limit = max(3 * svc.settings.reconcile_interval_s, 30)
        age = time.time() - report.started_at if report else None
        checks["scheduler"] = "ok" if age is not None and age <= limit else (
            f"last reconcile pass {age:.0f} s ago" if age is not None else "no reconcile pass yet")
    else:
        checks["scheduler"] = "ok"  # a follower: another process reconciles
    return checks


@router.get("/api/ready")
async def ready(request: Request) -> JSONResponse:
    """Anyone may ask (load balancers do) and learns which check failed; the details (hosts,
    error texts) only go to a signed-in admin or an API token."""
    checks = await asyncio.to_thread(_checks)
    failed = [name for name, result in checks.items() if result != "ok"]
    body = {"status": "ready" if not failed else "unready", "failed": failed}
    try:
        await require_read(request)
        body["checks"] = checks
    except HTTPException:
        pass
    return JSONResponse(body, status_code=200 if not failed else 503)


class ConsoleCollector:
    """Read at scrape time: the table for model figures, the process for counters."""

    def collect(self):
        svc = services()
        with Session(svc.db) as s:
            by_state = dict(s.exec(select(Model.state, func.count()).group_by(Model.state)).all())
            by_health = dict(s.exec(select(Model.health, func.count()).where(Model.state == ModelState.RUNNING)
                                    .group_by(Model.health)).all())
            latency = s.exec(select(Model.name, Model.probe_latency_ms)
                             .where(Model.state == ModelState.RUNNING, Model.probe_latency_ms.is_not(None))).all()
            deliveries = dict(s.exec(select(WebhookDelivery.status, func.count())
                                     .group_by(WebhookDelivery.status)).all())
        g = GaugeMetricFamily("cortex_models", "Models by state", labels=["state"])
        for st in ModelState:
            g.add_metric([st.value], by_state.get(st, 0))
        yield g
        h = GaugeMetricFamily("cortex_running_models_health", "Running models by health", labels=["health"])
        for hv in Health:
            h.add_metric([hv.value], by_health.get(hv, 0))
        yield h
        lat = GaugeMetricFamily("cortex_model_probe_latency_seconds", "Last health probe latency",
                                labels=["model"])
        for name, ms in latency:
            lat.add_metric([name], ms / 1000)
        yield lat
        rec = svc.reconciler
        yield CounterMetricFamily("cortex_reconcile_passes", "Reconcile passes completed", value=rec.passes)
        last = rec.last_report
        yield GaugeMetricFamily("cortex_reconcile_last_pass_seconds", "Duration of the last reconcile pass",
                                value=last.duration_s if last else 0.0)
        yield CounterMetricFamily("cortex_password_checks", "Password hash verifications (sign-ins) since start",
                                  value=auth.password_checks)
        yield CounterMetricFamily("cortex_docker_events", "Docker container events seen",
                                  value=svc.scheduler.docker_events_seen)
        out = CounterMetricFamily("cortex_webhook_delivery_outcomes", "Webhook delivery attempts by outcome "
                                  "(this process)", labels=["outcome"])
        for outcome, n in svc.scheduler.deliverer.counts.items():
            out.add_metric([outcome], n)
        yield out
        dq = GaugeMetricFamily("cortex_webhook_deliveries", "Webhook deliveries in the outbox by status",
                               labels=["status"])
        for status in ("pending", "delivered", "failed"):
            dq.add_metric([status], deliveries.get(status, 0))
        yield dq
        yield from gateway_series(svc.gateway.metrics)


def gateway_series(gm):
    """The gateway's figures in this process since it started."""
    req = CounterMetricFamily("cortex_gateway_requests", "Gateway requests by model and HTTP status",
                              labels=["model", "status"])
    for (model, status), n in list(gm.requests.items()):
        req.add_metric([model, str(status)], n)
    yield req
    refused = CounterMetricFamily("cortex_gateway_refused", "Gateway requests refused before any model was asked "
                                  "(401 key, 403 model not allowed, 429 rate limit), by HTTP status; never usage rows",
                                  labels=["status"])
    for status, n in sorted(gm.refused.items()):
        refused.add_metric([str(status)], n)
    yield refused
    tok = CounterMetricFamily("cortex_gateway_tokens", "Tokens the engines reported through the gateway",
                              labels=["model", "kind"])
    for (model, kind), n in list(gm.tokens.items()):
        tok.add_metric([model, kind], n)
    yield tok
    for name, doc, hists in (("cortex_gateway_request_seconds", "Gateway request latency", gm.latency),
                             ("cortex_gateway_ttft_seconds", "Gateway time to first streamed chunk", gm.ttft)):
        fam = HistogramMetricFamily(name, doc, labels=["model"])
        for model, h in list(hists.items()):
            fam.add_metric([model], h.buckets(), sum_value=h.total)
        yield fam


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    if not services().settings.metrics_public:
        await require_read(request)
    registry = CollectorRegistry()
    registry.register(ConsoleCollector())
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
