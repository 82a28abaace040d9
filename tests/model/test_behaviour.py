"""Behavioural tests of the trained classifier: invariance, minimum functionality, images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import assert_same_prediction
from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.schema import OUTPUT_COLUMNS

JpegWriter = Callable[[int, Path, int], Path]


def predict_one(classifier: ProductClassifier, **fields: object) -> pd.Series:
    return classifier.predict(pd.DataFrame([fields])).iloc[0]


@pytest.mark.parametrize(
    "variants",
    [
        ["Piscine gonflable", "PISCINE GONFLABLE", "piscine gonflable", "  Piscine   gonflable "],
        [
            "Bâche de piscine",
            "B&acirc;che de piscine",
            "B&amp;acirc;che de piscine",
            "<b>Bâche</b> de piscine",
        ],
        ["Collier pour chien", "COLLIER POUR CHIEN", "Collier <i>pour</i> chien"],
        [
            "Housse de couette coton",
            "Housse de couette coton &amp; nappe",
            "HOUSSE DE COUETTE COTON",
        ],
    ],
)
def test_casing_spacing_and_html_do_not_change_the_class(
    tiny_classifier: ProductClassifier, variants: list[str]
) -> None:
    predicted = tiny_classifier.predict(pd.DataFrame({"designation": variants}))
    assert predicted["prdtypecode"].nunique() == 1, predicted[["prdtypecode", "confidence"]]


def test_html_entities_give_exactly_the_decoded_text_prediction(
    tiny_classifier: ProductClassifier,
) -> None:
    # clean_text decodes entities before any feature: the two inputs are the same product.
    frame = pd.DataFrame(
        {
            "designation": ["Litière pour chat", "Liti&egrave;re pour chat"],
            "description": ["Chat &amp; chien", "Chat & chien"],
        }
    )
    probs = tiny_classifier.predict_proba(frame)
    assert_same_prediction(probs[0], probs[1])


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Piscine gonflable avec pompe de filtration", 2583),
        ("Roman de poche, tome 2", 10),
        ("Carte Pokemon holo rare Dracaufeu", 1160),
        ("Housse de couette et taie d'oreiller en coton", 1920),
        ("Collier et laisse pour chien", 2220),
    ],
)
def test_obvious_products_are_classified_right(
    tiny_classifier: ProductClassifier, title: str, expected: int
) -> None:
    result = predict_one(tiny_classifier, designation=title)
    assert result["prdtypecode"] == expected
    assert result["confidence"] > 0.5


def test_adding_class_words_raises_that_class_probability(
    tiny_classifier: ProductClassifier,
) -> None:
    # Directional: a vague title, then the same title with pool words.
    frame = pd.DataFrame({"designation": ["Grand lot neuf", "Grand lot neuf piscine chlore pompe"]})
    probs = tiny_classifier.predict_proba(frame)
    pool = list(tiny_classifier.classes_).index(2583)
    assert probs[1, pool] > probs[0, pool] + 0.3


def test_description_is_used(tiny_classifier: ProductClassifier) -> None:
    frame = pd.DataFrame(
        {
            "designation": ["Grand lot neuf"] * 2,
            "description": ["", "chien chat croquettes laisse niche"],
        }
    )
    probs = tiny_classifier.predict_proba(frame)
    pets = list(tiny_classifier.classes_).index(2220)
    assert probs[1, pets] > probs[0, pets]


def test_image_is_used_when_present_and_moves_the_prediction(
    tiny_classifier: ProductClassifier, tmp_path: Path, class_jpeg: JpegWriter
) -> None:
    image = class_jpeg(2583, tmp_path / "pool.jpg", 5)
    frame = pd.DataFrame(
        {
            "designation": ["Grand lot neuf"] * 3,
            "image_path": ["", str(image), ""],
            "image_bytes": [None, None, image.read_bytes()],
        }
    )
    result = tiny_classifier.predict(frame)
    assert result["has_image"].tolist() == [False, True, True]
    probs = tiny_classifier.predict_proba(frame)
    pool = list(tiny_classifier.classes_).index(2583)
    assert probs[1, pool] > probs[0, pool]
    # Bytes and path of the same file are the same input.
    assert_same_prediction(probs[1], probs[2])


def test_missing_corrupt_or_absent_images_fall_back_to_text_only(
    tiny_classifier: ProductClassifier, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    frame = pd.DataFrame(
        {
            "designation": ["Roman de poche"] * 6,
            "description": ["", None, "", "", "", ""],
            "image_path": [
                "",
                None,
                str(tmp_path / "missing.jpg"),
                str(corrupt),
                str(tmp_path),
                "",
            ],
            "image_bytes": [None, None, None, None, None, b"garbage bytes"],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    result = tiny_classifier.predict(frame)
    assert list(result.index) == [10, 11, 12, 13, 14, 15]
    assert not result["has_image"].any()
    probs = tiny_classifier.predict_proba(frame)
    text_only = tiny_classifier.predict_proba(pd.DataFrame({"designation": ["Roman de poche"]}))
    # A batch of 6 against a batch of 1: equal up to float rounding, whatever the CPU.
    assert_same_prediction(probs, np.repeat(text_only, 6, axis=0))


def test_corrupt_bytes_fall_back_to_a_valid_path(
    tiny_classifier: ProductClassifier, tmp_path: Path, class_jpeg: JpegWriter
) -> None:
    image = class_jpeg(2583, tmp_path / "pool.jpg", 9)
    frame = pd.DataFrame(
        {
            "designation": ["Grand lot"] * 2,
            "image_path": [str(image)] * 2,
            "image_bytes": [b"junk", None],
        }
    )
    probs = tiny_classifier.predict_proba(frame)
    assert tiny_classifier.predict(frame)["has_image"].all()
    assert_same_prediction(probs[0], probs[1])


def test_predict_branches_marks_rows_without_image(
    tiny_classifier: ProductClassifier, tmp_path: Path, class_jpeg: JpegWriter
) -> None:
    image = class_jpeg(2220, tmp_path / "cat.jpg", 3)
    frame = pd.DataFrame(
        {"designation": ["Collier chien", "Collier chien"], "image_path": ["", str(image)]}
    )
    branches = tiny_classifier.predict_branches(frame)
    assert set(branches) == {"sparse", "text_nn", "image", "fused"}
    for name in ("sparse", "text_nn", "fused"):
        np.testing.assert_allclose(branches[name].sum(axis=1), 1.0)
    assert np.isnan(branches["image"][0]).all()
    np.testing.assert_allclose(branches["image"][1].sum(), 1.0)
    np.testing.assert_allclose(branches["fused"], tiny_classifier.predict_proba(frame))


def test_output_contract_columns_dtypes_and_index(tiny_classifier: ProductClassifier) -> None:
    frame = pd.DataFrame({"designation": ["Roman", "Piscine", "Drap"]}, index=["a", "b", "c"])
    result = tiny_classifier.predict(frame)
    assert tuple(result.columns) == OUTPUT_COLUMNS
    assert list(result.index) == ["a", "b", "c"]
    expected = {
        "prdtypecode": "int64",
        "confidence": "float64",
        "top_1_code": "int64",
        "top_1_proba": "float64",
        "top_2_code": "int64",
        "top_3_proba": "float64",
        "has_image": "bool",
    }
    for column, dtype in expected.items():
        assert result[column].dtype == dtype, column
    assert (result["prdtypecode"] == result["top_1_code"]).all()
    assert (result["confidence"] == result["top_1_proba"]).all()
    assert (result["top_1_proba"] >= result["top_2_proba"]).all()
    assert (result["top_2_proba"] >= result["top_3_proba"]).all()
    assert set(result["category"]) <= {
        "Livre occasion",
        "Piscine",
        "Linge de maison",
        "Animalerie",
        "Carte de collection",
    }
    assert (result[["top_1_code", "top_2_code", "top_3_code"]].nunique(axis=1) == 3).all()


def test_empty_input_gives_empty_output_with_the_contract(
    tiny_classifier: ProductClassifier,
) -> None:
    result = tiny_classifier.predict(pd.DataFrame({"designation": pd.Series([], dtype=str)}))
    assert tuple(result.columns) == OUTPUT_COLUMNS
    assert len(result) == 0
    assert tiny_classifier.predict_proba(pd.DataFrame({"designation": []})).shape == (0, 5)


def test_bad_input_is_a_clear_error(tiny_classifier: ProductClassifier) -> None:
    with pytest.raises(DataError, match="no `designation` column"):
        tiny_classifier.predict(pd.DataFrame({"title": ["Roman"]}))
    with pytest.raises(DataError, match="row 7: field `designation` is required"):
        tiny_classifier.predict(pd.DataFrame({"designation": ["Roman", None]}, index=[3, 7]))
    with pytest.raises(DataError, match="row 0: field `description` must be a string"):
        tiny_classifier.predict(pd.DataFrame({"designation": ["Roman"], "description": [42]}))


def test_unfitted_classifier_refuses_to_predict() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        ProductClassifier({}).predict(pd.DataFrame({"designation": ["Roman"]}))


def test_training_data_errors_name_the_split_and_field(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    train, val, _ = tiny_products
    with pytest.raises(DataError, match="val split: missing column"):
        ProductClassifier({}).fit(train, val.drop(columns=["designation"]), progress=False)
    one_class = train.assign(prdtypecode=10)
    with pytest.raises(ModelError, match="at least two classes"):
        ProductClassifier({}).fit(one_class, val, progress=False)
