"""Administration: reload the models from the registry without downtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from rakuten_mlops.serving.deps import ModelsDep, require_role
from rakuten_mlops.serving.prediction.model_manager import ReloadStatus
from rakuten_mlops.serving.prediction.reloading import start_reload
from rakuten_mlops.serving.schemas import ReloadResponse

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_role("admin"))]
)


def _response(state: ReloadStatus) -> ReloadResponse:
    return ReloadResponse(
        state=state.state,
        started_at=state.started_at,
        finished_at=state.finished_at,
        error=state.error,
        champion_version=state.champion_version,
        challenger_version=state.challenger_version,
    )


@router.post(
    "/reload",
    response_model=ReloadResponse,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": ReloadResponse, "description": "Finished (with `wait=true`)."}},
)
async def reload_models(
    request: Request,
    response: Response,
    models: ModelsDep,
    wait: Annotated[bool, Query(description="Answer when the reload is over.")] = False,
) -> ReloadResponse:
    """Load the current champion (and challenger) in the background and swap atomically.

    In-flight requests finish on the old model; a failed load keeps it and `error` says why.
    """
    task = start_reload(request.app)
    if not wait:
        return _response(models.status)
    await task
    response.status_code = status.HTTP_200_OK
    return _response(models.status)


@router.get("/reload", response_model=ReloadResponse)
def reload_status(models: ModelsDep) -> ReloadResponse:
    """The state of the latest reload."""
    return _response(models.status)
