"""The models in service: `GET /v1/model` and the console's Model page."""

from __future__ import annotations

from rakuten_mlops.serving.prediction.model_manager import (
    LoadedModel,
    ModelManager,
    ModelNotReadyError,
)
from rakuten_mlops.serving.schemas import ModelInfo, ModelResponse


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
        gate_reasons=model.gate_reasons,
        loaded_at=model.loaded_at,
    )


def models_in_service(models: ModelManager) -> ModelResponse:
    """The champion (version, run, training metrics, load time) and the challenger.

    Raises:
        ModelNotReadyError: no champion is loaded yet (503).
    """
    champion, challenger = models.champion, models.challenger
    if champion is None:
        raise ModelNotReadyError("the model is not loaded yet; retry in a moment (GET /ready)")
    return ModelResponse(
        **model_info(champion).model_dump(),
        challenger_mode=models.settings.challenger_mode,
        challenger_share=models.settings.challenger_share,
        challenger=model_info(challenger) if challenger is not None else None,
    )


def review_rule_point(model: LoadedModel | None) -> tuple[float, float] | None:
    """(coverage, precision) of a model's review rule on its test split, from its run's
    metrics (None: a model without them, such as one served from a directory)."""
    if model is None:
        return None
    coverage = model.metrics.get("test_auto_accept_coverage")
    precision = model.metrics.get("test_auto_accept_precision")
    return None if coverage is None or precision is None else (coverage, precision)
