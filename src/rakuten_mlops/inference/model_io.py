"""How model input is built and model output is read: one place for batch CSVs and the API.

`build_model_input` turns product fields (title, description, image path or bytes) into the
pyfunc's input frame, with the same fallback everywhere (an empty title is replaced by the
description) and a note per row; `check_model_output` verifies what the model returned and
`read_predictions` turns its rows into `ItemPrediction`s (code, name, confidence, top-3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rakuten_mlops.data.schema import CATEGORY_NAMES, OUTPUT_COLUMNS, TARGET_COL
from rakuten_mlops.errors import ModelError

NOTE_DESIGNATION_FROM_DESCRIPTION = "empty designation: predicted from the description"
NOTE_IMAGE_ONLY = "no text: predicted from the image only"
NOTE_NO_INPUT = "no text and no image: low-information prediction"
TOP_K = 3


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
        designation: titles ("" when missing); an empty one is replaced by the description.
        description: descriptions ("" when missing).
        image_paths: image files ("" for none); the column is left out when None.
        image_bytes: encoded images (None for none); the column is left out when None.
        index: index of the frame (default: a RangeIndex).
    """
    n = len(designation)
    titles = pd.Series(list(designation), index=index, dtype=object).fillna("").astype(str)
    descriptions = pd.Series(list(description), index=titles.index, dtype=object)
    descriptions = descriptions.fillna("").astype(str)
    has_image = np.zeros(n, dtype=bool)
    if image_paths is not None:
        has_image |= np.array([bool(p) for p in image_paths], dtype=bool)
    if image_bytes is not None:
        has_image |= np.array([bool(b) for b in image_bytes], dtype=bool)
    empty_title = titles.str.strip().eq("").to_numpy()
    has_description = descriptions.str.strip().ne("").to_numpy()
    notes = np.where(
        empty_title & has_description,
        NOTE_DESIGNATION_FROM_DESCRIPTION,
        np.where(
            empty_title & has_image, NOTE_IMAGE_ONLY, np.where(empty_title, NOTE_NO_INPUT, "")
        ),
    ).tolist()
    columns: dict[str, object] = {
        "designation": titles.where(~empty_title, descriptions),
        "description": descriptions,
    }
    if image_paths is not None:
        columns["image_path"] = list(image_paths)
    if image_bytes is not None:
        columns["image_bytes"] = list(image_bytes)
    return pd.DataFrame(columns, index=titles.index), [str(note) for note in notes]


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
    used = output["has_image"].astype(bool).tolist()
    final_notes = resolve_notes(notes, used) if notes is not None else [""] * len(output)
    columns = {c: output[c].tolist() for c in OUTPUT_COLUMNS}
    items: list[ItemPrediction] = []
    for i in range(len(output)):
        top = tuple(
            TopClass(
                code=int(columns[f"top_{k}_code"][i]),
                name=CATEGORY_NAMES.get(
                    int(columns[f"top_{k}_code"][i]), str(columns[f"top_{k}_code"][i])
                ),
                probability=float(columns[f"top_{k}_proba"][i]),
            )
            for k in range(1, TOP_K + 1)
        )
        items.append(
            ItemPrediction(
                prdtypecode=int(columns[TARGET_COL][i]),
                category=str(columns["category"][i]),
                confidence=float(columns["confidence"][i]),
                top3=top,
                has_image=bool(used[i]),
                note=final_notes[i],
            )
        )
    return items
