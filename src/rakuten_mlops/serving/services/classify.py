"""Classify products: what `POST /v1/predict`, `POST /v1/predict/batch` and the console's
classify page do, checks of the input included (a 413 or a 422 naming the field)."""

from __future__ import annotations

import base64
import binascii

from fastapi import BackgroundTasks, HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth.inputs import image_problem, product_text_errors
from rakuten_mlops.serving.auth.principals import Principal
from rakuten_mlops.serving.errors import validation_errors
from rakuten_mlops.serving.logs import request_id_var
from rakuten_mlops.serving.prediction.predictor import PredictionOut, PredictionService, ProductIn
from rakuten_mlops.serving.schemas import (
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    FieldError,
    ModelRef,
    PredictionResponse,
    ProductItem,
    TimingOut,
    TopClassOut,
)


def invalid(field: str, message: str) -> RequestValidationError:
    """A 422 naming `field`, in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def to_response(out: PredictionOut) -> PredictionResponse:
    """The API answer of one prediction."""
    item = out.item
    return PredictionResponse(
        prediction_id=out.prediction_id,
        prdtypecode=item.prdtypecode,
        category=item.category,
        confidence=item.confidence,
        top3=[TopClassOut(code=t.code, name=t.name, probability=t.probability) for t in item.top3],
        needs_review=out.needs_review,
        has_image=item.has_image,
        note=item.note,
        model=ModelRef(
            name=out.model.name,
            version=out.model.version,
            alias=out.model.alias,
            variant=out.model.variant,
        ),
        timing=TimingOut(
            total_ms=round(out.latency_ms, 3),
            model_ms=round(out.model_ms, 3),
            batch_size=out.batch_size,
        ),
    )


async def classify_product(
    predictor: PredictionService,
    settings: Settings,
    principal: Principal,
    background: BackgroundTasks,
    *,
    designation: str,
    description: str | None = None,
    productid: str | None = None,
    imageid: str | None = None,
    image: UploadFile | None = None,
) -> PredictionResponse:
    """Classify one product: code, category, confidence, top-3, review flag, model, timing.

    The shadow model (if any) answers the same product in `background`, after the answer.
    """
    text_errors = product_text_errors(
        designation=designation, description=description, productid=productid, imageid=imageid
    )
    if text_errors:
        raise invalid(*text_errors[0])
    image_bytes: bytes | None = None
    if image is not None:
        if image.size is not None and image.size > settings.max_image_bytes:
            raise too_large("image", image.size, settings.max_image_bytes)
        image_bytes = await image.read()
        if len(image_bytes) > settings.max_image_bytes:
            raise too_large("image", len(image_bytes), settings.max_image_bytes)
        image_bytes = image_bytes or None  # an empty file part: no image chosen
        problem = None
        if image_bytes:
            problem = await run_in_threadpool(
                image_problem, image_bytes, settings.max_image_pixels, image.content_type
            )
        if problem:
            raise invalid("image", problem)
    product = ProductIn(
        designation=designation,
        description=description or "",
        productid=productid or None,
        imageid=imageid or None,
        image_bytes=image_bytes,
    )
    request_id = request_id_var.get()
    (out,) = await predictor.predict([product], request_id=request_id, username=principal.username)
    if predictor.shadow_model() is not None:
        background.add_task(
            predictor.predict_shadow, [product], request_id=request_id, username=principal.username
        )
    return to_response(out)


async def classify_batch(
    body: BatchRequest,
    predictor: PredictionService,
    settings: Settings,
    principal: Principal,
    background: BackgroundTasks,
) -> BatchResponse:
    """Classify up to RAKUTEN_BATCH_MAX_ITEMS products; a bad item gets an error entry."""
    if len(body.items) > settings.batch_max_items:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"items: {len(body.items)} products, at most {settings.batch_max_items} "
            "per batch (RAKUTEN_BATCH_MAX_ITEMS)",
        )
    # Base64 decoding and image checks take milliseconds per image: in a worker thread,
    # never on the event loop (which keeps answering other requests meanwhile).
    results, valid = await run_in_threadpool(_batch_products, body.items, settings)
    request_id = request_id_var.get()
    products = [product for _, product in valid]
    if products:
        outs = await predictor.predict(products, request_id=request_id, username=principal.username)
        for (index, _), out in zip(valid, outs, strict=True):
            results[index].prediction = to_response(out)
        if predictor.shadow_model() is not None:
            background.add_task(
                predictor.predict_shadow,
                products,
                request_id=request_id,
                username=principal.username,
            )
    return BatchResponse(results=results, succeeded=len(valid), failed=len(results) - len(valid))


def _batch_products(
    items: list[dict[str, object]], settings: Settings
) -> tuple[list[BatchItemResult], list[tuple[int, ProductIn]]]:
    results: list[BatchItemResult] = []
    valid: list[tuple[int, ProductIn]] = []
    for index, raw in enumerate(items):
        product, errors = _batch_product(index, raw, settings)
        if product is None:
            results.append(BatchItemResult(index=index, ok=False, errors=errors))
        else:
            results.append(BatchItemResult(index=index, ok=True))
            valid.append((index, product))
    return results, valid


def _batch_product(
    index: int, raw: dict[str, object], settings: Settings
) -> tuple[ProductIn | None, list[FieldError]]:
    max_image_bytes = settings.max_image_bytes
    prefix = f"items[{index}]"
    try:
        item = ProductItem.model_validate(raw)
    except ValidationError as exc:
        errors = [
            FieldError(
                field=f"{prefix}.{e['field']}" if e["field"] else prefix, message=e["message"]
            )
            for e in validation_errors(exc.errors())
        ]
        return None, errors
    text_errors = product_text_errors(
        designation=item.designation,
        description=item.description,
        productid=item.productid,
        imageid=item.imageid,
    )
    if text_errors:
        return None, [FieldError(field=f"{prefix}.{f}", message=m) for f, m in text_errors]
    image_bytes: bytes | None = None
    if item.image_base64:
        try:
            image_bytes = base64.b64decode(item.image_base64, validate=True)
        except (binascii.Error, ValueError):
            return None, [FieldError(field=f"{prefix}.image_base64", message="not valid base64")]
        if len(image_bytes) > max_image_bytes:
            return None, [
                FieldError(
                    field=f"{prefix}.image_base64",
                    message=f"image of {len(image_bytes)} bytes, at most {max_image_bytes}",
                )
            ]
        problem = image_bytes and image_problem(image_bytes, settings.max_image_pixels)
        if problem:
            return None, [FieldError(field=f"{prefix}.image_base64", message=problem)]
    return (
        ProductIn(
            designation=item.designation,
            description=item.description or "",
            productid=item.productid,
            imageid=item.imageid,
            image_bytes=image_bytes or None,
        ),
        [],
    )


def too_large(field: str, size: int, limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"{field}: {size} bytes, at most {limit} (RAKUTEN_MAX_IMAGE_BYTES)",
    )
