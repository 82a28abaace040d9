"""Request and response models of the API (what `/docs` shows, with examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rakuten_mlops.schema import CATEGORY_NAMES, PRODUCT_CODES

MAX_TITLE_CHARS = 1_000
MAX_DESCRIPTION_CHARS = 20_000
MAX_ID_CHARS = 64
# Integers in queries, paths and forms that reach the database (INTEGER is 32-bit signed in
# PostgreSQL; anything larger is refused with a 422, never passed on).
MAX_DB_INT = 2**31 - 1


class TopClassOut(BaseModel):
    """One of the three most probable classes."""

    code: int = Field(examples=[2583])
    name: str = Field(examples=["Piscine"])
    probability: float = Field(ge=0, le=1, examples=[0.91])


class ModelRef(BaseModel):
    """Which model answered."""

    name: str = Field(examples=["rakuten-product-classifier"])
    version: str | None = Field(examples=["3"])
    alias: str | None = Field(examples=["champion"])
    variant: Literal["champion", "challenger"]


class TimingOut(BaseModel):
    """How long the prediction took."""

    total_ms: float = Field(description="From the start of prediction to the answer.")
    model_ms: float = Field(description="The model call that predicted this item.")
    batch_size: int = Field(description="Items predicted in that model call (micro-batching).")


class PredictionResponse(BaseModel):
    """The predicted class of one product."""

    prediction_id: str = Field(examples=["3f2c9a0e8b1d4c55a0f1e2d3c4b5a697"])
    prdtypecode: int = Field(examples=[2583])
    category: str = Field(examples=["Piscine"])
    confidence: float = Field(ge=0, le=1, examples=[0.91])
    top3: list[TopClassOut]
    needs_review: bool = Field(
        description="Send to a reviewer: the model's review rule (fitted for "
        "`review.target_precision`), or confidence under RAKUTEN_REVIEW_THRESHOLD when set."
    )
    has_image: bool = Field(description="Whether an image was decoded and used.")
    note: str = Field(default="", description="Said when the product had less than usual.")
    model: ModelRef
    timing: TimingOut


class ProductItem(BaseModel):
    """One product of a batch (the image, optional, is base64-encoded)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "designation": "Piscine tubulaire ronde 3,66 x 0,76 m",
                    "description": "Livrée avec pompe de filtration",
                    "productid": "278535884",
                    "imageid": "1245644185",
                }
            ]
        }
    )

    designation: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    productid: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    imageid: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    image_base64: str | None = Field(default=None, description="JPEG/PNG bytes, base64.")

    @field_validator("designation")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.replace("\x00", "").strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("productid", "imageid", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class BatchRequest(BaseModel):
    """Products to classify; each item is validated on its own (a bad one fails alone)."""

    items: list[dict[str, Any]] = Field(
        min_length=1,
        description="Products (see ProductItem); at most RAKUTEN_BATCH_MAX_ITEMS.",
        json_schema_extra={"items": ProductItem.model_json_schema()},
        examples=[
            [
                {"designation": "Housse de couette 240x220 coton", "productid": "1"},
                {"designation": "Carte Pokemon Dracaufeu holo", "image_base64": "<base64 JPEG>"},
            ]
        ],
    )


class FieldError(BaseModel):
    """What is wrong with one field."""

    field: str = Field(examples=["items[2].image_base64"])
    message: str


class BatchItemResult(BaseModel):
    """The outcome of one batch item: a prediction or an error, never both."""

    index: int
    ok: bool
    prediction: PredictionResponse | None = None
    errors: list[FieldError] | None = None


class BatchResponse(BaseModel):
    """One result per item, in the order of the request."""

    results: list[BatchItemResult]
    succeeded: int
    failed: int


class FeedbackRequest(BaseModel):
    """The correct code of a prediction."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"prediction_id": "3f2c9a0e8b1d4c55a0f1e2d3c4b5a697", "prdtypecode": 2583}]
        }
    )

    prediction_id: str = Field(min_length=1, max_length=64)
    prdtypecode: int = Field(description="One of the 27 product type codes.")

    @field_validator("prdtypecode")
    @classmethod
    def _known_code(cls, value: int) -> int:
        if value not in CATEGORY_NAMES:
            raise ValueError(
                f"{value} is not one of the 27 product type codes "
                f"({', '.join(map(str, PRODUCT_CODES))})"
            )
        return value


class FeedbackResponse(BaseModel):
    """The stored feedback (committed to the database)."""

    id: int
    prediction_id: str
    prdtypecode: int
    predicted_code: int
    correct: bool
    variant: str
    username: str | None
    created_at: datetime


class PredictionRecord(BaseModel):
    """A stored prediction."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    request_id: str | None
    productid: str | None
    imageid: str | None
    designation: str
    description: str | None
    has_image: bool
    image_sha256: str | None
    model_name: str
    model_version: str | None
    model_alias: str | None
    variant: str
    shadow: bool
    prdtypecode: int
    confidence: float
    top3: list[TopClassOut]
    needs_review: bool
    latency_ms: float
    username: str | None
    corrected_prdtypecode: int | None = Field(
        default=None, description="The reviewers' code in force (latest correction not undone)."
    )
    corrected_by: str | None = None
    corrected_at: datetime | None = None


class PredictionPage(BaseModel):
    """A page of stored predictions, newest first."""

    items: list[PredictionRecord]
    total: int
    limit: int
    offset: int


class ModelInfo(BaseModel):
    """A model in service."""

    variant: Literal["champion", "challenger"]
    name: str
    version: str | None
    alias: str | None
    run_id: str | None
    uri: str
    metrics: dict[str, float]
    gate_reasons: list[str] = Field(
        default_factory=list,
        description="why the promotion gate promoted or kept this version (PASS/FAIL/INFO)",
    )
    loaded_at: datetime


class ModelResponse(ModelInfo):
    """The champion in service, and the challenger when one is loaded."""

    challenger_mode: Literal["off", "split", "shadow"]
    challenger_share: float
    challenger: ModelInfo | None = None


class ReloadResponse(BaseModel):
    """The state of the latest reload (running, succeeded or failed, and why)."""

    state: Literal["idle", "running", "succeeded", "failed"]
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    champion_version: str | None
    challenger_version: str | None


class HealthResponse(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """Readiness: a model is loaded."""

    status: Literal["ready", "loading", "failed"]
    model_version: str | None = None
    detail: str | None = None
    # "down": predictions go on for known callers; feedback, the queue, admin and sign-in 503.
    database: Literal["up", "down"] = "up"


class ErrorResponse(BaseModel):
    """Every error answer: a message and, for invalid input, the fields at fault."""

    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None
