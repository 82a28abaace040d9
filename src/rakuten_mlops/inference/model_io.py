"""How model input is built and model output is read: one place for batch CSVs and the API.

`build_model_input` turns product fields (title, description, image path or bytes) into the
pyfunc's input frame, with the same fallback everywhere (an empty title is replaced by the
description) and a note per row; `check_model_output` verifies what the model returned and
`read_predictions` turns its rows into `ItemPrediction`s (code, name, confidence, top-3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.output import DEFAULT_REVIEW_THRESHOLD, TOP_K, category_name
from rakuten_mlops.schema import OUTPUT_COLUMNS

NOTE_DESIGNATION_FROM_DESCRIPTION = "empty designation: predicted from the description"
NOTE_IMAGE_ONLY = "no text: predicted from the image only"
NOTE_NO_INPUT = "no text and no image: low-information prediction"


@dataclass(frozen=True)
class TopClass:
    """One of the most probable classes of a prediction."""

    code: int
    name: str
    probability: float


@dataclass(frozen=True)
class ItemPrediction:
    """What the model said about one product."""

    prdtypecode: int
    category: str
    confidence: float
    top3: tuple[TopClass, ...]
    has_image: bool
    note: str = ""
    # The model's review rule sends it to a reviewer.
    needs_review: bool = False

    def top3_dicts(self) -> list[dict[str, object]]:
        """The top-3 as JSON-ready dicts (`code`, `name`, `probability`)."""
        return [{"code": t.code, "name": t.name, "probability": t.probability} for t in self.top3]


def build_model_input(
    designation: Sequence[str],
    description: Sequence[str],
    image_paths: Sequence[str] | None = None,
    image_bytes: Sequence[bytes | None] | None = None,
    index: pd.Index | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Model input rows and a note per row.

    Args:
        designation: titles ("" or None when missing); an empty one is replaced by the
            description.
        description: descriptions ("" or None when missing).
        image_paths: image files ("" for none); the column is left out when None.
        image_bytes: encoded images (None for none); the column is left out when None.
        index: index of the frame (default: a RangeIndex).
    """
    titles = [_text(value) for value in designation]
    descriptions = [_text(value) for value in description]
    has_image = [False] * len(titles)
    for images in (image_paths, image_bytes):
        if images is not None:
            has_image = [
                known or bool(image) for known, image in zip(has_image, images, strict=True)
            ]
    model_titles: list[str] = []
    notes: list[str] = []
    for title, text, image in zip(titles, descriptions, has_image, strict=True):
        if title.strip():
            model_titles.append(title)
            notes.append("")
            continue
        model_titles.append(text)
        if text.strip():
            notes.append(NOTE_DESIGNATION_FROM_DESCRIPTION)
        else:
            notes.append(NOTE_IMAGE_ONLY if image else NOTE_NO_INPUT)
    columns: dict[str, object] = {"designation": model_titles, "description": descriptions}
    if image_paths is not None:
        columns["image_path"] = list(image_paths)
    if image_bytes is not None:
        columns["image_bytes"] = list(image_bytes)
    frame = pd.DataFrame(columns, index=index, dtype=object)
    return frame, notes


def _text(value: object) -> str:
    """A text field as a string: "" for None or NaN (a missing CSV cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def check_model_output(predictions: pd.DataFrame, n_rows: int, where: str = "") -> pd.DataFrame:
    """The contract columns of the model output, in order, after checking the row count.

    Raises:
        ModelError: a wrong number of rows or a missing column.
    """
    if len(predictions) != n_rows:
        raise ModelError(
            f"the model returned {len(predictions)} rows for {n_rows} input rows"
            + (f" ({where})" if where else "")
        )
    if "needs_review" not in predictions.columns and "confidence" in predictions.columns:
        # A model trained before models carried a review rule.
        predictions = predictions.assign(
            needs_review=predictions["confidence"].to_numpy(dtype=np.float64)
            < DEFAULT_REVIEW_THRESHOLD
        )
    missing = [c for c in OUTPUT_COLUMNS if c not in predictions.columns]
    if missing:
        raise ModelError(f"the model output lacks column(s) {', '.join(missing)}")
    return predictions.loc[:, list(OUTPUT_COLUMNS)]


def resolve_notes(notes: Sequence[str], used_image: Sequence[bool]) -> list[str]:
    """Final notes: an image that exists but does not decode leaves nothing to predict from."""
    return [
        NOTE_NO_INPUT if note == NOTE_IMAGE_ONLY and not used else note
        for note, used in zip(notes, used_image, strict=True)
    ]


def read_predictions(
    output: pd.DataFrame, notes: Sequence[str] | None = None
) -> list[ItemPrediction]:
    """One `ItemPrediction` per row of a checked model output (`check_model_output`)."""
    return items_from_top(
        output[[f"top_{k}_code" for k in range(1, TOP_K + 1)]].to_numpy(dtype=np.int64),
        output[[f"top_{k}_proba" for k in range(1, TOP_K + 1)]].to_numpy(dtype=np.float64),
        output["has_image"].to_numpy(dtype=bool),
        output["needs_review"].to_numpy(dtype=bool),
        notes,
    )


def items_from_top(
    codes: np.ndarray,
    probs: np.ndarray,
    has_image: np.ndarray,
    needs_review: np.ndarray,
    notes: Sequence[str] | None = None,
) -> list[ItemPrediction]:
    """One `ItemPrediction` per row of the model's top-3 arrays: `codes` (n, 3), `probs`
    (n, 3), `has_image` (n,) (the image was used), `needs_review` (n,) (the model's review
    rule); the predicted code is the top-1."""
    used = [bool(x) for x in has_image.tolist()]
    review = [bool(x) for x in needs_review.tolist()]
    final_notes = resolve_notes(notes, used) if notes is not None else [""] * len(used)
    items: list[ItemPrediction] = []
    for row_codes, row_probs, image, note, flagged in zip(
        codes.tolist(), probs.tolist(), used, final_notes, review, strict=True
    ):
        names = [category_name(code) for code in row_codes]
        items.append(
            ItemPrediction(
                prdtypecode=int(row_codes[0]),
                category=names[0],
                confidence=float(row_probs[0]),
                top3=tuple(
                    TopClass(code=int(code), name=name, probability=float(p))
                    for code, name, p in zip(row_codes, names, row_probs, strict=True)
                ),
                has_image=image,
                note=note,
                needs_review=flagged,
            )
        )
    return items


ItemsFn = Callable[[pd.DataFrame, Sequence[str]], list[ItemPrediction]]


def items_predictor(model: object) -> ItemsFn:
    """`(model input, notes) -> ItemPrediction`s of a loaded pyfunc model.

    For this project's own classifier the top-3 arrays are read straight from it (the same
    computation as its output DataFrame, without building and reading one per call); any
    other pyfunc model goes through `predict` -> `check_model_output` -> `read_predictions`.
    """
    from rakuten_mlops.models.pyfunc import as_predict_fn, native_classifier

    classifier = native_classifier(model)
    if classifier is not None:
        predict_top = classifier.predict_top

        def from_classifier(frame: pd.DataFrame, notes: Sequence[str]) -> list[ItemPrediction]:
            if len(frame) == 0:
                return []
            top = predict_top(frame)
            return items_from_top(top.codes, top.probs, top.has_image, top.needs_review, notes)

        return from_classifier
    return items_from_output(as_predict_fn(model))  # type: ignore[arg-type]


def items_from_output(predict: Callable[[pd.DataFrame], pd.DataFrame]) -> ItemsFn:
    """`(model input, notes) -> ItemPrediction`s through `predict`'s output DataFrame."""

    def from_output(frame: pd.DataFrame, notes: Sequence[str]) -> list[ItemPrediction]:
        return read_predictions(check_model_output(predict(frame), len(frame)), notes)

    return from_output


def load_items_predictor(uri: str, name: str | None = None) -> ItemsFn:
    """Load the pyfunc model at `uri` and return its reader (`items_predictor`), after one
    prediction: a model that cannot predict must not replace a working one.

    Raises:
        ModelError: the model cannot be loaded or does not predict (`name`, default `uri`,
            names it in the message).
    """
    from rakuten_mlops.models.pyfunc import load_pyfunc_model

    predict_items = items_predictor(load_pyfunc_model(uri))
    try:
        predict_items(*build_model_input(["warm up"], [""]))
    except Exception as exc:
        raise ModelError(
            f"{name or uri} loaded but fails to predict: {type(exc).__name__}: {exc}"
        ) from exc
    return predict_items
