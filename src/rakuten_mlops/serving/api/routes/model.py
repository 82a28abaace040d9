"""The models in service."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from rakuten_mlops.serving.deps import ModelsDep, get_current_principal
from rakuten_mlops.serving.schemas import ModelResponse
from rakuten_mlops.serving.services.models import models_in_service

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(get_current_principal)])


@router.get("/model", response_model=ModelResponse)
def get_model(models: ModelsDep) -> ModelResponse:
    """The champion in service (version, run, training metrics, load time) and challenger."""
    return models_in_service(models)
