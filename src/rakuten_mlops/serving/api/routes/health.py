"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from rakuten_mlops.serving.deps import MetricsDep, ModelsDep
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
def ready(models: ModelsDep) -> ReadyResponse | JSONResponse:
    """200 once a model is loaded, 503 before (with the reason when the load failed)."""
    champion = models.champion
    if champion is not None:
        return ReadyResponse(status="ready", model_version=champion.version)
    state = models.status
    body = ReadyResponse(
        status="failed" if state.state == "failed" else "loading", detail=state.error
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", response_class=Response)
def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(service_metrics.export(), media_type=CONTENT_TYPE_LATEST)
