"""The output contract (models/output.py) is the one every prediction path writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rakuten_mlops.models.output import (
    OUTPUT_DTYPES,
    TOP_K,
    build_output,
    empty_output,
    top_predictions,
)
from rakuten_mlops.models.pyfunc import MODEL_SIGNATURE
from rakuten_mlops.schema import CATEGORY_NAMES, OUTPUT_COLUMNS


def test_built_and_empty_outputs_have_the_contract_columns_and_types() -> None:
    classes = np.array([10, 40, 50, 2583], dtype=np.int64)
    probs = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1]])
    top = top_predictions(probs, classes, np.array([True, False]))
    built = build_output(top, pd.Index([7, 9]))
    empty = empty_output(pd.Index([]))
    assert tuple(built.columns) == tuple(empty.columns) == OUTPUT_COLUMNS
    assert dict(built.dtypes.astype(str)) == dict(empty.dtypes.astype(str)) == OUTPUT_DTYPES
    assert built["prdtypecode"].tolist() == [50, 10]
    assert built["category"].tolist() == [CATEGORY_NAMES[50], CATEGORY_NAMES[10]]
    assert built["confidence"].tolist() == built["top_1_proba"].tolist() == [0.6, 0.7]
    assert built["top_2_code"].tolist() == [40, 40]
    assert built.index.tolist() == [7, 9]


def test_a_model_with_fewer_classes_pads_the_top_k() -> None:
    top = top_predictions(np.array([[0.3, 0.7]]), np.array([10, 40]), np.array([False]))
    row = build_output(top, [0]).iloc[0]
    assert [row[f"top_{k}_code"] for k in range(1, TOP_K + 1)] == [40, 10, -1]
    assert row["top_3_proba"] == 0.0


def test_the_mlflow_signature_is_the_contract() -> None:
    outputs = MODEL_SIGNATURE.outputs.inputs
    assert tuple(spec.name for spec in outputs) == OUTPUT_COLUMNS
    kinds = {spec.name: spec.type.name for spec in outputs}
    assert kinds["prdtypecode"] == "long" and kinds["has_image"] == "boolean"
    assert kinds["category"] == "string" and kinds["confidence"] == "double"
