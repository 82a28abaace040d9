"""The models in service."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from rakuten_mlops.serving.deps import ModelsDep, get_current_principal
from rakuten_mlops.serving.prediction.model_manager import LoadedModel, ModelNotReadyError
from rakuten_mlops.serving.schemas import ModelInfo, ModelResponse

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(get_current_principal)])


def model_info(model: LoadedModel) -> ModelInfo:
    """The public description of a loaded model."""
    return ModelInfo(
        variant=model.variant,
        name=model.name,
        version=model.version,
        alias=model.alias,
        run_id=model.run_id,
        uri=model.uri,
        metrics=model.metrics,
        loaded_at=model.loaded_at,
    )


@router.get("/model", response_model=ModelResponse)
def get_model(models: ModelsDep) -> ModelResponse:
    """The champion in service (version, run, training metrics, load time) and challenger."""
    champion, challenger = models.champion, models.challenger
    if champion is None:
        raise ModelNotReadyError("the model is not loaded yet; retry in a moment (GET /ready)")
    return ModelResponse(
        **model_info(champion).model_dump(),
        challenger_mode=models.settings.challenger_mode,
        challenger_share=models.settings.challenger_share,
        challenger=model_info(challenger) if challenger is not None else None,
    )
