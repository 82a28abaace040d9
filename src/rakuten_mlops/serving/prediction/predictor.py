"""One prediction path for every route: pick the variant, predict (micro-batched), record,
count. Shadow predictions of the challenger run after the response with the same path.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rakuten_mlops.config import Settings
from rakuten_mlops.db.models import new_prediction_id
from rakuten_mlops.inference.model_io import ItemPrediction
from rakuten_mlops.serving.logs import truncate
from rakuten_mlops.serving.metrics import ServiceMetrics
from rakuten_mlops.serving.prediction.batcher import BatchResult, MicroBatcher, ModelItem
from rakuten_mlops.serving.prediction.model_manager import (
    LoadedModel,
    ModelManager,
    ModelNotReadyError,
)
from rakuten_mlops.serving.prediction.recorder import PredictionRecorder

logger = logging.getLogger(__name__)
ONLINE_ACCURACY_WINDOW = 500


@dataclass(frozen=True)
class ProductIn:
    """One product to classify, as the routes received it (NUL characters removed: no
    database stores them in text)."""

    designation: str
    description: str = ""
    productid: str | None = None
    imageid: str | None = None
    image_bytes: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("designation", "description", "productid", "imageid"):
            value = getattr(self, name)
            if value and "\x00" in value:
                object.__setattr__(self, name, value.replace("\x00", ""))


@dataclass(frozen=True)
class PredictionOut:
    """One answered prediction: what the model said, which model, how long it took."""

    prediction_id: str
    created_at: datetime
    item: ItemPrediction
    needs_review: bool
    model: LoadedModel
    latency_ms: float
    model_ms: float
    batch_size: int


def split_bucket(product: ProductIn) -> float:
    """A stable number in [0, 1) from the product id (or its title): sticky variant choice."""
    key = product.productid or product.designation.strip().lower()
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class PredictionService:
    """Predicts products with the models in service and keeps a record of each answer."""

    def __init__(
        self,
        settings: Settings,
        models: ModelManager,
        batcher: MicroBatcher,
        recorder: PredictionRecorder,
        metrics: ServiceMetrics,
    ) -> None:
        self.settings = settings
        self.models = models
        self.batcher = batcher
        self.recorder = recorder
        self.metrics = metrics
        self._outcomes: dict[str, deque[bool]] = {}

    def choose_model(self, product: ProductIn) -> LoadedModel:
        """The champion, or the challenger for the sticky `split` share of products.

        Raises:
            ModelNotReadyError: no model is loaded yet.
        """
        champion, challenger = self.models.champion, self.models.challenger
        if champion is None:
            raise ModelNotReadyError("the model is not loaded yet; retry in a moment (GET /ready)")
        if (
            self.settings.challenger_mode == "split"
            and challenger is not None
            and split_bucket(product) < self.settings.challenger_share
        ):
            return challenger
        return champion

    async def predict(
        self, products: list[ProductIn], *, request_id: str | None, username: str | None
    ) -> list[PredictionOut]:
        """Predict, record and count `products` (one model call per variant, shared)."""
        t0 = time.perf_counter()
        chosen = [self.choose_model(p) for p in products]
        outputs: list[PredictionOut | None] = [None] * len(products)
        groups: dict[int, list[int]] = {}
        for i, model in enumerate(chosen):
            groups.setdefault(id(model), []).append(i)
        for indexes in groups.values():
            model = chosen[indexes[0]]
            result = await self.batcher.predict(model, [_model_item(products[i]) for i in indexes])
            latency_ms = (time.perf_counter() - t0) * 1000
            for i, item in zip(indexes, result.predictions, strict=True):
                outputs[i] = self._answer(item, model, result, latency_ms)
        answered = [out for out in outputs if out is not None]
        self._keep(products, answered, request_id=request_id, username=username, shadow=False)
        return answered

    def shadow_model(self) -> LoadedModel | None:
        """The challenger when it predicts silently (`shadow` mode), else None."""
        if self.settings.challenger_mode != "shadow":
            return None
        return self.models.challenger

    async def predict_shadow(
        self, products: list[ProductIn], *, request_id: str | None, username: str | None
    ) -> None:
        """The challenger's silent predictions of `products` (after the response)."""
        model = self.shadow_model()
        if model is None or not products:
            return
        t0 = time.perf_counter()
        try:
            result = await self.batcher.predict(model, [_model_item(p) for p in products])
        except Exception:
            logger.exception("shadow prediction failed")
            return
        latency_ms = (time.perf_counter() - t0) * 1000
        outs = [self._answer(item, model, result, latency_ms) for item in result.predictions]
        self._keep(products, outs, request_id=request_id, username=username, shadow=True)

    def _answer(
        self, item: ItemPrediction, model: LoadedModel, result: BatchResult, latency_ms: float
    ) -> PredictionOut:
        """One prediction of a micro-batch result, with its id, time and review flag."""
        return PredictionOut(
            prediction_id=new_prediction_id(),
            created_at=datetime.now(UTC),
            item=item,
            needs_review=(
                item.needs_review
                if self.settings.review_threshold is None
                else item.confidence < self.settings.review_threshold
            ),
            model=model,
            latency_ms=latency_ms,
            model_ms=result.model_seconds * 1000,
            batch_size=result.batch_size,
        )

    def _keep(
        self,
        products: list[ProductIn],
        outs: list[PredictionOut],
        *,
        request_id: str | None,
        username: str | None,
        shadow: bool,
    ) -> None:
        rows: list[dict[str, Any]] = []
        images: dict[str, bytes] = {}
        for product, out in zip(products, outs, strict=True):
            sha256 = (
                hashlib.sha256(product.image_bytes).hexdigest() if product.image_bytes else None
            )
            if sha256 and product.image_bytes:
                images[sha256] = product.image_bytes
            variant = out.model.variant
            rows.append(
                {
                    "id": out.prediction_id,
                    "created_at": out.created_at,
                    "request_id": request_id,
                    "productid": product.productid,
                    "imageid": product.imageid,
                    "designation": product.designation,
                    "description": product.description or None,
                    "has_image": out.item.has_image,
                    "image_sha256": sha256,
                    "image_path": self.recorder.image_path_for(sha256) if sha256 else None,
                    "model_name": out.model.name,
                    "model_version": out.model.version,
                    "model_alias": out.model.alias,
                    "variant": variant,
                    "shadow": shadow,
                    "prdtypecode": out.item.prdtypecode,
                    "confidence": out.item.confidence,
                    "top3": out.item.top3_dicts(),
                    "needs_review": out.needs_review,
                    "latency_ms": out.latency_ms,
                    "username": username,
                }
            )
            m = self.metrics
            m.prediction_duration.labels(variant).observe(out.model_ms / 1000)
            m.predictions.labels(variant, str(out.item.prdtypecode)).inc()
            m.confidence.labels(variant).observe(out.item.confidence)
            if out.item.has_image:
                m.with_image.labels(variant).inc()
            if out.needs_review:
                m.needs_review.labels(variant).inc()
            logger.info(
                "prediction",
                extra={
                    "prediction_id": out.prediction_id,
                    "title": truncate(product.designation, self.settings.log_title_chars),
                    "image_bytes": len(product.image_bytes) if product.image_bytes else 0,
                    "prdtypecode": out.item.prdtypecode,
                    "confidence": round(out.item.confidence, 4),
                    "variant": variant,
                    "shadow": shadow,
                    "model_version": out.model.version,
                    "batch_size": out.batch_size,
                },
            )
        self.recorder.record(rows, images)

    def count_feedback(self, variant: str, correct: bool) -> None:
        """Update the feedback counter and the rolling online accuracy of `variant`."""
        self.metrics.feedback.labels(variant, "true" if correct else "false").inc()
        self._add_outcome(variant, correct)

    def restore_online_accuracy(self, outcomes: list[tuple[str, bool]]) -> None:
        """Start the rolling online accuracy from stored feedback (oldest first)."""
        for variant, correct in outcomes:
            self._add_outcome(variant, correct)

    def _add_outcome(self, variant: str, correct: bool) -> None:
        window = self._outcomes.setdefault(variant, deque(maxlen=ONLINE_ACCURACY_WINDOW))
        window.append(correct)
        self.metrics.online_accuracy.labels(variant).set(sum(window) / len(window))


def _model_item(product: ProductIn) -> ModelItem:
    return ModelItem(product.designation, product.description, product.image_bytes)
