"""Pieces of the classifier: params, image decoding and cache, tokenizer, sparse branch."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from PIL import Image
from sklearn.svm import LinearSVC

from rakuten_mlops.errors import ModelError
from rakuten_mlops.features import image_tensors
from rakuten_mlops.features.image_tensors import ImageTensorCache, decode_image, load_images
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.sparse import (
    SparseTextModel,
    bin_statistics,
    fit_nb_svm,
    fit_statistics_bins,
    text_statistics,
)
from rakuten_mlops.models.text_nn import TextTokenizer
from rakuten_mlops.params import (
    ModelParams,
    ParamsError,
    SparseParams,
    TextNNParams,
    load_params,
    parse_model_params,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_image(
    path: Path, size: tuple[int, int], color: tuple[int, int, int], fmt: str = "JPEG"
) -> Path:
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


# ---------------------------------------------------------------- params


def test_params_yaml_model_section_is_valid_and_complete() -> None:
    section = load_params(REPO_ROOT / "params.yaml")["model"]
    parsed = parse_model_params(section)
    assert parsed.text_transformer.enabled is False
    # Every default is spelled out or intentionally left to the code: parsing is lossless.
    assert parse_model_params(parsed.to_dict()) == parsed


def test_params_override_defaults_and_convert_lists() -> None:
    parsed = parse_model_params(
        {"image": {"channels": [4, 8], "epochs": 1}, "sparse": {"svc_c": 2.0}}
    )
    assert parsed.image.channels == (4, 8)
    assert parsed.image.epochs == 1
    assert parsed.image.image_size == ModelParams().image.image_size
    assert parsed.sparse.svc_c == 2.0
    assert parse_model_params(None) == ModelParams()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"text_nn": {"epoch": 3}}, "unknown key.*model.text_nn.*epoch"),
        ({"cnn": {}}, "unknown key.*`model`: cnn"),
        ({"image": [1, 2]}, "model.image` must be a mapping"),
        ({"sparse": {"nb_svm": "yes"}}, r"model\.sparse\.nb_svm` must be true or false"),
    ],
)
def test_bad_params_are_refused_with_the_key_named(params: dict[str, object], message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        ProductClassifier(params)


def test_enabling_the_transformer_without_a_model_path_names_the_setting(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    train, val, _ = tiny_products
    with pytest.raises(ModelError, match=r"model\.text_transformer\.model_path is empty"):
        ProductClassifier({"text_transformer": {"enabled": True}}).fit(train, val, progress=False)


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_image_resizes_any_format_to_rgb_square(tmp_path: Path, fmt: str) -> None:
    path = write_image(tmp_path / f"img.{fmt.lower()}", (120, 80), (250, 10, 10), fmt)
    array = decode_image(path, 24)
    assert array is not None
    assert array.shape == (24, 24, 3)
    assert array.dtype == np.uint8
    assert array[..., 0].mean() > 200 and array[..., 1].mean() < 50
    from_bytes = decode_image(path.read_bytes(), 24)
    assert from_bytes is not None
    np.testing.assert_array_equal(from_bytes, array)


def test_decode_image_handles_grey_and_palette_images(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("L", (30, 30), 128).save(grey)
    palette = tmp_path / "palette.gif"
    Image.new("P", (30, 30), 3).save(palette)
    for path in (grey, palette):
        array = decode_image(path, 16)
        assert array is not None and array.shape == (16, 16, 3)


def test_decode_image_answers_none_for_unusable_input(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="JPEG")
    truncated = buffer.getvalue()[:100]
    assert decode_image(tmp_path / "missing.jpg", 16) is None
    assert decode_image(tmp_path / "bad.jpg", 16) is None
    assert decode_image(b"", 16) is None
    assert decode_image(truncated, 16) is None
    assert decode_image(tmp_path, 16) is None  # a directory


def test_image_cache_reuses_entries_and_sees_changed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_image(tmp_path / "a.jpg", (50, 50), (10, 200, 10))
    cache = ImageTensorCache(tmp_path / "cache", 16)
    first = cache.load(path)
    assert first is not None
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1

    calls: list[object] = []
    real_decode = image_tensors.decode_image

    def counting_decode(source: bytes | str | Path, size: int) -> np.ndarray | None:
        calls.append(source)
        return real_decode(source, size)

    monkeypatch.setattr(image_tensors, "decode_image", counting_decode)
    second = cache.load(path)
    assert calls == []  # served from the cache
    assert second is not None
    np.testing.assert_array_equal(first, second)

    # The file changes (new content, new mtime): a new entry is decoded.
    write_image(path, (50, 50), (200, 10, 10))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = cache.load(path)
    assert len(calls) == 1
    assert third is not None and third[..., 0].mean() > 150

    # Another resolution is another entry.
    assert ImageTensorCache(tmp_path / "cache", 8).load(path) is not None
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3


def test_image_cache_remembers_undecodable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    cache = ImageTensorCache(tmp_path / "cache", 16)
    assert cache.load(bad) is None
    monkeypatch.setattr(image_tensors, "decode_image", lambda *_: pytest.fail("decoded again"))
    assert cache.load(bad) is None
    assert cache.load(tmp_path / "missing.jpg") is None


def test_load_images_mixes_present_missing_and_empty(tmp_path: Path) -> None:
    good = write_image(tmp_path / "g.jpg", (40, 40), (0, 0, 255))
    arrays = load_images([str(good), "", None, str(tmp_path / "nope.jpg")], 12, tmp_path / "c")
    assert arrays[0] is not None and arrays[0].shape == (12, 12, 3)
    assert arrays[1:] == [None, None, None]
    uncached = load_images([str(good)], 12)
    assert uncached[0] is not None
    np.testing.assert_array_equal(uncached[0], arrays[0])


# ---------------------------------------------------------------- text


def test_tokenizer_vocabulary_is_order_independent_and_round_trips() -> None:
    titles = ["Piscine gonflable", "Bâche piscine", "Roman poche"]
    descriptions = ["pompe", "", "un bon roman"]
    params = TextNNParams(min_count=1)
    first = TextTokenizer.build(titles, descriptions, params)
    reversed_ = TextTokenizer.build(titles[::-1], descriptions[::-1], params)
    assert first.vocabulary == reversed_.vocabulary
    assert "t:piscine" in first.vocabulary
    assert "t:bache piscine" in first.vocabulary  # accents stripped, bigram kept
    assert "d:pompe" in first.vocabulary
    restored = TextTokenizer.from_dict(first.to_dict())
    assert restored.encode("Piscine gonflable", "pompe") == first.encode(
        "Piscine gonflable", "pompe"
    )


def test_tokenizer_weights_are_normalised_per_block() -> None:
    tokenizer = TextTokenizer.build(
        ["Piscine gonflable ronde"], ["pompe filtre pompe"], TextNNParams()
    )
    ids, weights = tokenizer.encode("Piscine gonflable ronde", "pompe filtre pompe")
    blocks: dict[str, float] = {}
    for index, weight in zip(ids, weights, strict=True):
        block = tokenizer.vocabulary[index - 1][:2]
        blocks[block] = blocks.get(block, 0.0) + weight**2
    assert set(blocks) == {"t:", "c:", "d:"}
    for total in blocks.values():
        assert total == pytest.approx(1.0)
    # Unknown text gives no feature (or only hashed ones when hashing is on).
    assert tokenizer.encode("zzz", "") == ([], [])
    hashing = TextTokenizer.build(["Piscine"], [""], TextNNParams(hash_buckets=16))
    ids, _ = hashing.encode("zzz", "")
    assert ids and all(len(hashing.vocabulary) < i <= len(hashing.vocabulary) + 16 for i in ids)


def test_text_statistics_and_bins() -> None:
    stats = text_statistics(["ROMAN 2", "Piscine gonflable"], ["", "une description"])
    assert stats.shape == (2, 6)
    assert stats[0, 2] == 1.0 and stats[1, 2] == 0.0  # description empty or not
    assert stats[0, 3] > stats[1, 3]  # share of capitals
    edges = fit_statistics_bins(stats)
    one_hot = bin_statistics(stats, edges)
    assert one_hot.shape[0] == 2
    np.testing.assert_array_equal(one_hot.sum(axis=1), np.full((2, 1), 6.0))


# ---------------------------------------------------------------- sparse branch


def sparse_corpus() -> tuple[list[str], list[str], np.ndarray]:
    """90 products of 3 classes, each with its own words; a quarter without description."""
    rng = np.random.default_rng(0)
    words = {
        0: ["piscine", "bache", "filtre", "pompe"],
        1: ["roman", "livre", "poche", "auteur"],
        2: ["console", "manette", "jeu", "ecran"],
    }
    titles, descriptions, labels = [], [], []
    for i in range(90):
        k = i % 3
        first, second = rng.choice(words[k], size=2, replace=False)
        titles.append(f"{first} {second} {i % 7}")
        descriptions.append(f"{rng.choice(words[k])} modele {i % 5}" if i % 4 else "")
        labels.append(k)
    return titles, descriptions, np.array(labels)


def test_nb_svm_scores_as_a_linear_svc_on_ratio_scaled_features() -> None:
    titles, descriptions, labels = sparse_corpus()
    features = SparseTextModel(SparseParams(), seed=0).fit(titles, descriptions, labels)
    matrix = features.transform(titles, descriptions)
    nb = fit_nb_svm(matrix, labels, 3, c=0.7, max_iter=2000, seed=0)
    present = (matrix > 0).toarray().astype(np.float64)
    for k in range(3):
        positive = present[labels == k].sum(axis=0) + 1.0
        negative = present[labels != k].sum(axis=0) + 1.0
        ratio = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
        scaled = matrix @ sp.diags(ratio.astype(np.float32))
        svc = LinearSVC(C=0.7, max_iter=2000, random_state=0).fit(scaled, labels == k)
        np.testing.assert_allclose(
            nb.decision_function(matrix)[:, k], svc.decision_function(scaled), rtol=0, atol=1e-4
        )
    assert (nb.decision_function(matrix).argmax(axis=1) == labels).mean() > 0.9


def test_sparse_branch_averages_its_three_linear_models() -> None:
    titles, descriptions, labels = sparse_corpus()
    model = SparseTextModel(SparseParams(), seed=0).fit(titles, descriptions, labels)
    assert [type(m).__name__ for m in model.models] == ["LinearSVC", "LinearScores"]
    assert set(model.view2_vectorizers) == {"text_words", "description_chars"}
    assert len(model.view2_models) == 1
    main = model.transform(titles, descriptions)
    view2 = model._transform_view2(titles, descriptions)
    expected = (
        model.models[0].decision_function(main)
        + model.models[1].decision_function(main)
        + model.view2_models[0].decision_function(view2)
    ) / 3
    scores = model.decision_function(titles, descriptions)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert (scores.argmax(axis=1) == labels).mean() > 0.9
    for linear in (*model.models, *model.view2_models):
        # A sparse row times `coef_.T` reads it in place only when it is C-contiguous (else
        # the ~50 MB of coefficients are copied at every prediction) and single precision.
        assert linear.coef_.T.flags.c_contiguous and linear.coef_.dtype == np.float32

    single = SparseTextModel(SparseParams(nb_svm=False, second_view=False), seed=0)
    single.fit(titles, descriptions, labels)
    assert len(single.models) == 1 and not single.view2_models and not single.view2_vectorizers
    np.testing.assert_allclose(
        single.decision_function(titles, descriptions),
        single.models[0].decision_function(single.transform(titles, descriptions)),
        rtol=0,
        atol=1e-5,
    )


def test_sparse_branch_scores_are_the_mean_of_its_members_scores() -> None:
    titles, descriptions, labels = sparse_corpus()
    model = SparseTextModel(SparseParams(), seed=0).fit(titles, descriptions, labels)
    members = model.member_scores(titles, descriptions)
    # The LinearSVC and the NB-SVM of the first view, the LinearSVC of the second.
    assert len(members) == len(model.models) + len(model.view2_models) == 3
    assert all(m.shape == (len(titles), len(np.unique(labels))) for m in members)
    np.testing.assert_allclose(
        model.decision_function(titles, descriptions), np.mean(members, axis=0), atol=1e-6
    )
    # Three different models, not one model's scores three times.
    assert not np.allclose(members[0], members[1]) and not np.allclose(members[0], members[2])


def test_sparse_model_saved_before_the_second_view_existed_still_predicts() -> None:
    titles, descriptions, labels = sparse_corpus()
    model = SparseTextModel(SparseParams(nb_svm=False, second_view=False), seed=0)
    model.fit(titles, descriptions, labels)
    expected = model.decision_function(titles, descriptions)
    del model.view2_vectorizers, model.view2_models  # the attributes an older model lacks
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.decision_function(titles, descriptions), expected)


def test_sparse_branch_scores_two_classes_one_column_each() -> None:
    titles, descriptions, labels = sparse_corpus()
    two = labels < 2
    titles = [t for t, keep in zip(titles, two, strict=True) if keep]
    descriptions = [d for d, keep in zip(descriptions, two, strict=True) if keep]
    for params in (SparseParams(), SparseParams(nb_svm=False, second_view=False)):
        model = SparseTextModel(params, seed=0).fit(titles, descriptions, labels[two])
        scores = model.decision_function(titles, descriptions)
        assert scores.shape == (len(titles), 2)
        assert (scores.argmax(axis=1) == labels[two]).mean() > 0.9


def test_second_view_leaves_out_a_block_with_no_term_seen_twice() -> None:
    titles, _, labels = sparse_corpus()
    # One description in all: its character n-grams are each in one product (min_df 2).
    descriptions = [""] * (len(titles) - 1) + ["zq"]
    model = SparseTextModel(SparseParams(), seed=0).fit(titles, descriptions, labels)
    assert list(model.view2_vectorizers) == ["text_words"]
    assert len(model.view2_models) == 1
    scores = model.decision_function(titles, descriptions)
    assert (scores.argmax(axis=1) == labels).mean() > 0.9
