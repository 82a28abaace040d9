"""Classify one product (multipart, with an optional image file) or a batch (JSON)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, UploadFile

from rakuten_mlops.serving.deps import CurrentPrincipal, PredictorDep, SettingsDep
from rakuten_mlops.serving.schemas import (
    MAX_DESCRIPTION_CHARS,
    MAX_ID_CHARS,
    MAX_TITLE_CHARS,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    PredictionResponse,
)
from rakuten_mlops.serving.services.classify import classify_batch, classify_product

router = APIRouter(prefix="/v1", tags=["predict"])
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"model": ErrorResponse, "description": "Image or batch too large."},
    422: {"model": ErrorResponse, "description": "Invalid input; `errors` names the fields."},
    503: {"model": ErrorResponse, "description": "No model loaded yet."},
}


@router.post("/predict", response_model=PredictionResponse, responses=ERROR_RESPONSES)
async def predict(
    predictor: PredictorDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    background: BackgroundTasks,
    designation: Annotated[
        str,
        Form(
            max_length=MAX_TITLE_CHARS,
            description="Product title (French).",
            examples=["Piscine tubulaire ronde 3,66 x 0,76 m"],
        ),
    ],
    description: Annotated[
        str | None,
        Form(max_length=MAX_DESCRIPTION_CHARS, examples=["Livrée avec pompe de filtration"]),
    ] = None,
    productid: Annotated[str | None, Form(max_length=MAX_ID_CHARS, examples=["278535884"])] = None,
    imageid: Annotated[str | None, Form(max_length=MAX_ID_CHARS, examples=["1245644185"])] = None,
    image: Annotated[UploadFile | None, File(description="Product photo (JPEG or PNG).")] = None,
) -> PredictionResponse:
    """Classify one product: code, category, confidence, top-3, review flag, model, timing."""
    return await classify_product(
        predictor,
        settings,
        principal,
        background,
        designation=designation,
        description=description,
        productid=productid,
        imageid=imageid,
        image=image,
    )


@router.post("/predict/batch", response_model=BatchResponse, responses=ERROR_RESPONSES)
async def predict_batch(
    body: BatchRequest,
    predictor: PredictorDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    background: BackgroundTasks,
) -> BatchResponse:
    """Classify up to RAKUTEN_BATCH_MAX_ITEMS products; a bad item gets an error entry."""
    return await classify_batch(body, predictor, settings, principal, background)
