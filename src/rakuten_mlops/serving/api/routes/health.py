"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from rakuten_mlops.serving.deps import MetricsDep, ModelsDep, optional_principal
from rakuten_mlops.serving.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
def health() -> HealthResponse:
    """The process is alive (says nothing of the model)."""
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model loaded yet."}},
)
async def ready(request: Request, models: ModelsDep) -> ReadyResponse | JSONResponse:
    """200 once a model is loaded, 503 before; `database` says whether the service database
    answers (predictions go on without it). Why a load failed (registry names, internal
    URLs) is told to admins only (a bearer token or API key of an admin)."""
    champion = models.champion
    health = getattr(request.app.state, "db_health", None)
    database: Literal["up", "down"] = "up" if health is None or health.up else "down"
    if champion is not None:
        return ReadyResponse(status="ready", model_version=champion.version, database=database)
    state = models.status
    detail = None
    if state.error:
        caller = await optional_principal(request)
        detail = state.error if caller is not None and caller.role == "admin" else None
        detail = detail or "the model could not be loaded (details for admins)"
    body = ReadyResponse(
        status="failed" if state.state == "failed" else "loading", detail=detail, database=database
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", response_class=Response)
def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(service_metrics.export(), media_type=CONTENT_TYPE_LATEST)
