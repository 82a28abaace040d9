"""The product classifier as a BentoML service: the packaged serving path (a Bento, its image).

It serves the same registered model as the prediction service, imported into BentoML's model
store by `import_model.py`, and answers what the service's `/v1/predict/batch` items answer
(code, category, confidence, top-3, `needs_review`, `has_image`, `note`). It has no users,
records, feedback or console: it exists for operators who deploy Bentos, and as a serving
reference for `bench/bench_api.py`.

    POST /classify  {"products": [{"designation": "...", "description": "...",
                                   "image_base64": "<JPEG/PNG/WebP bytes, base64>"}, ...]}

The API is batchable: BentoML's adaptive batching merges the products of concurrent
requests into one model call (at most `BENTO_MAX_BATCH_SIZE` products, waiting at most
`BENTO_MAX_LATENCY_MS`). Every product is validated in its own request, before batching, so
a bad one is answered 400 with the field named and never fails other clients' products.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import bentoml
from pydantic import BaseModel, ConfigDict, model_validator

from rakuten_mlops.inference.model_io import ItemPrediction, build_model_input, load_items_predictor
from rakuten_mlops.serving.auth.inputs import image_problem
from rakuten_mlops.serving.schemas import ProductItem

MODEL_NAME = "rakuten-product-classifier"
# The folder `bentoml.mlflow.import_model` stores the MLflow model in, inside a BentoML model.
MLFLOW_MODEL_DIR = "mlflow_model"
MAX_IMAGE_PIXELS = int(os.environ.get("RAKUTEN_MAX_IMAGE_PIXELS", "25000000"))
# Set: flag every product under this confidence; empty: the model's own review rule.
_OVERRIDE = os.environ.get("RAKUTEN_REVIEW_THRESHOLD", "").strip()
REVIEW_THRESHOLD = float(_OVERRIDE) if _OVERRIDE else None


class Product(ProductItem):
    """One product, as an item of `/v1/predict/batch`: the title, and optionally the
    description, the image and the ids (the same fields and limits)."""

    # BentoML's OpenAPI writer has no place for the JSON schema's `examples`.
    model_config = ConfigDict(json_schema_extra=None)

    @model_validator(mode="after")
    def _readable_image(self) -> Product:
        if self.image_base64:
            problem = image_problem(self.image_bytes() or b"", MAX_IMAGE_PIXELS)
            if problem:
                raise ValueError(f"image_base64: {problem}")
        return self

    def image_bytes(self) -> bytes | None:
        """The decoded image, None when there is none.

        Raises:
            ValueError: the field is not base64.
        """
        if not self.image_base64:
            return None
        try:
            return base64.b64decode(self.image_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("image_base64: not valid base64") from exc


class TopClass(BaseModel):
    code: int
    name: str
    probability: float


class Prediction(BaseModel):
    """What `/v1/predict/batch` answers for one product, less the service's own records
    (prediction id, timing), plus the model that answered."""

    prdtypecode: int
    category: str
    confidence: float
    top3: list[TopClass]
    needs_review: bool
    has_image: bool
    note: str = ""
    model: dict[str, str | None]


@bentoml.service(
    name="rakuten_product_classifier",
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 256},
    labels={"project": "rakuten-mlops", "role": "serving-reference"},
)
class ProductClassifier:
    """The registered classifier, loaded once per worker from BentoML's model store."""

    bento_model = bentoml.models.BentoModel(os.environ.get("RAKUTEN_BENTO_MODEL", MODEL_NAME))

    def __init__(self) -> None:
        model: Any = self.bento_model
        # Loads and warms up the model: a model that cannot predict stops the worker here.
        self._predict_items = load_items_predictor(
            str(model.path_of(MLFLOW_MODEL_DIR)), name=str(model.tag)
        )
        labels = dict(model.info.labels)
        self._model_ref = {
            "name": labels.get("registered_name", MODEL_NAME),
            "version": labels.get("version"),
            "bento_model": str(model.tag),
        }

    @bentoml.api(
        batchable=True,
        max_batch_size=int(os.environ.get("BENTO_MAX_BATCH_SIZE", "64")),
        max_latency_ms=int(os.environ.get("BENTO_MAX_LATENCY_MS", "1000")),
    )
    def classify(self, products: list[Product]) -> list[Prediction]:
        """The predicted class of each product, in order."""
        frame, notes = build_model_input(
            [p.designation for p in products],
            [p.description or "" for p in products],
            image_bytes=[p.image_bytes() for p in products],
        )
        return [self._answer(item) for item in self._predict_items(frame, notes)]

    def _answer(self, item: ItemPrediction) -> Prediction:
        return Prediction(
            prdtypecode=item.prdtypecode,
            category=item.category,
            confidence=item.confidence,
            top3=[TopClass(code=t.code, name=t.name, probability=t.probability) for t in item.top3],
            needs_review=(
                item.needs_review
                if REVIEW_THRESHOLD is None
                else item.confidence < REVIEW_THRESHOLD
            ),
            has_image=item.has_image,
            note=item.note,
            model=self._model_ref,
        )
