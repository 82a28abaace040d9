"""The optional pretrained transformer text branch (`model.text_transformer`).

No network: a tiny CamemBERT-architecture "pretrained" model (1 layer, hidden size 32) and
a tokenizer trained on generated product texts are written with `save_pretrained` into a
temporary directory, which is the `model_path`, exactly like a downloaded checkpoint.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import UnigramTrainer
from transformers import CamembertConfig, CamembertModel, PreTrainedTokenizerFast

from factories import make_products, tiny_model_params
from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.pyfunc import pip_requirements
from rakuten_mlops.models.transformer import (
    TransformerTextClassifier,
    linear_warmup_decay,
    resolve_device,
)
from rakuten_mlops.params import ParamsError, TextTransformerParams, parse_model_params
from sample_model import pyfunc_round_trip

Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
EPOCHS = 8
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SETTING = "model.text_transformer.model_path"


def build_tiny_camembert(directory: Path, texts: list[str]) -> Path:
    """A CamemBERT-like checkpoint (random weights) + SentencePiece-style tokenizer."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(
        texts, UnigramTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS, unk_token="<unk>")
    )
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
    ).save_pretrained(directory)
    config = CamembertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=tokenizer.token_to_id("<pad>"),
        bos_token_id=bos,
        eos_token_id=eos,
        type_vocab_size=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CamembertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's directory; its tokenizer learnt from other generated products."""
    corpus = make_products(40, seed=11, image_dir=tmp_path_factory.mktemp("corpus-images"))
    texts = (corpus["designation"] + " " + corpus["description"]).tolist()
    return build_tiny_camembert(tmp_path_factory.mktemp("tiny-camembert"), texts)


def transformer_section(model_path: Path | str, **overrides: Any) -> dict[str, Any]:
    """`model.text_transformer` that fine-tunes the tiny model in about a second."""
    section = {
        "enabled": True,
        "model_path": str(model_path),
        "max_length": 32,
        "epochs": EPOCHS,
        "batch_size": 16,
        "learning_rate": 0.005,
        "device": "cpu",
    }
    return {**section, **overrides}


@pytest.fixture(scope="module")
def classifier(pretrained_dir: Path, tiny_products: Splits) -> ProductClassifier:
    """All branches (sparse, text_nn, transformer, image) trained on the generated products."""
    train, val, _ = tiny_products
    params = {**tiny_model_params(), "text_transformer": transformer_section(pretrained_dir)}
    return ProductClassifier(params, seed=42).fit(train, val, progress=False)


def encoded_labels(frame: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    return np.searchsorted(classes, frame["prdtypecode"].to_numpy(dtype=np.int64))


# ---------------------------------------------------------------- the branch in the classifier


@pytest.mark.slow
def test_transformer_branch_alone_learns_the_products(
    classifier: ProductClassifier, tiny_products: Splits
) -> None:
    _, _, test = tiny_products
    proba = classifier.predict_branches(test)["transformer"]
    accuracy = (classifier.classes_[proba.argmax(axis=1)] == test["prdtypecode"]).mean()
    assert accuracy > 0.6  # 5 classes: chance is 0.2
    losses = classifier.history["transformer/train_loss"]
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.5 * losses[0]
    assert len(classifier.history["transformer/val_accuracy"]) == EPOCHS
    assert classifier.timings["fit/transformer"] > 0


@pytest.mark.slow
def test_classifier_fuses_the_transformer_with_the_other_branches(
    classifier: ProductClassifier, tiny_products: Splits
) -> None:
    _, _, test = tiny_products
    assert classifier.branches == ["sparse", "text_nn", "transformer", "image"]
    assert "transformer" in classifier.temperatures
    branches = classifier.predict_branches(test)
    assert set(branches) == {"sparse", "text_nn", "transformer", "image", "fused"}
    assert np.isfinite(branches["transformer"]).all()
    np.testing.assert_allclose(branches["transformer"].sum(axis=1), 1.0)
    np.testing.assert_allclose(branches["fused"], classifier.predict_proba(test))
    fused_accuracy = (classifier.predict(test)["prdtypecode"] == test["prdtypecode"]).mean()
    assert fused_accuracy > 0.8


@pytest.mark.slow
def test_save_load_round_trip_predicts_identically(
    classifier: ProductClassifier, tiny_products: Splits, tmp_path: Path
) -> None:
    _, _, test = tiny_products
    classifier.save(tmp_path / "model")
    saved = tmp_path / "model" / "transformer"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in saved.iterdir()
    }
    # Written with the umask's permissions, like the rest of the model (not owner-only).
    umask = os.umask(0)
    os.umask(umask)
    assert (saved / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (saved / "model.safetensors").stat().st_mode & 0o777 == (
        (saved / "config.json").stat().st_mode & 0o777
    )
    loaded = ProductClassifier.load(tmp_path / "model")
    assert loaded.branches == classifier.branches
    np.testing.assert_allclose(
        loaded.predict_proba(test), classifier.predict_proba(test), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        loaded.predict_branches(test)["transformer"],
        classifier.predict_branches(test)["transformer"],
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.mark.slow
def test_pyfunc_model_with_transformer_predicts_and_pins_its_packages(
    classifier: ProductClassifier, tiny_products: Splits, tmp_path: Path
) -> None:
    _, _, test = tiny_products
    frame = test[["designation", "description", "image_path"]]
    requirements = pyfunc_round_trip(classifier, frame, tmp_path / "pyfunc")
    assert any(line.startswith("transformers==") for line in requirements)
    assert any(line.startswith("tokenizers==") for line in requirements)


def test_requirements_add_transformers_only_with_the_branch() -> None:
    without = pip_requirements(["sparse", "text_nn", "image"])
    with_branch = pip_requirements(["sparse", "transformer"])
    assert not any(pin.startswith(("transformers", "tokenizers")) for pin in without)
    extra = [pin.split("==")[0] for pin in with_branch if pin not in without]
    assert extra == ["transformers", "tokenizers", "safetensors"]


# ---------------------------------------------------------------- the branch on its own


def test_same_seed_same_model_other_seed_other_model(
    pretrained_dir: Path, tiny_products: Splits
) -> None:
    train, _, test = tiny_products
    params = TextTransformerParams(**transformer_section(pretrained_dir, epochs=2))
    labels = encoded_labels(train, np.unique(train["prdtypecode"]))
    texts = (train["designation"].tolist(), train["description"].tolist())
    test_texts = (test["designation"].tolist(), test["description"].tolist())

    def fit(seed: int) -> np.ndarray:
        model = TransformerTextClassifier(params, seed)
        model.fit(*texts, labels, progress=False)
        return model.predict_log_proba(*test_texts)

    global_rng = torch.get_rng_state()
    first, second = fit(3), fit(3)
    # Fine-tuning neither consumes nor reseeds the caller's global torch RNG.
    assert torch.equal(torch.get_rng_state(), global_rng)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-12)
    assert not np.allclose(first, fit(4))
    np.testing.assert_allclose(np.exp(first).sum(axis=1), 1.0, rtol=1e-6)


def test_long_descriptions_are_truncated_and_predictions_keep_input_order(
    pretrained_dir: Path, tiny_products: Splits
) -> None:
    train, _, _ = tiny_products
    params = TextTransformerParams(**transformer_section(pretrained_dir, epochs=1))
    model = TransformerTextClassifier(params, seed=0)
    labels = encoded_labels(train, np.unique(train["prdtypecode"]))
    model.fit(train["designation"].tolist(), train["description"].tolist(), labels, progress=False)
    titles = ["Roman de poche", "Piscine gonflable", "Collier chien"]
    long_text = " ".join(["piscine chlore pompe"] * 200)
    descriptions = [long_text, "", "laisse"]
    batch = model.predict_log_proba(titles, descriptions)
    assert batch.shape == (3, len(np.unique(labels)))
    # Row by row (no padding, other batches) gives the same scores: the sort by length
    # inside the batch does not mix rows up.
    for i in range(3):
        np.testing.assert_allclose(
            model.predict_log_proba([titles[i]], [descriptions[i]])[0], batch[i], atol=1e-5
        )
    assert model.predict_log_proba([], []).shape == (0, batch.shape[1])


def test_schedule_warms_up_then_decays_to_zero() -> None:
    factors = [linear_warmup_decay(step, 2, 10) for step in range(10)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a > b for a, b in itertools.pairwise(factors[2:]))
    assert 0 < factors[-1] <= 0.125


# ---------------------------------------------------------------- errors and params


@pytest.mark.parametrize(
    ("model_path", "message"),
    [
        ("", "model.text_transformer.model_path is empty"),
        ("MISSING_DIR", "is not a local directory.*allow_download is false"),
        ("almanach/camembert-base", "is not a local directory.*allow_download is false"),
    ],
)
def test_unusable_model_path_is_refused_with_the_setting_named(
    model_path: str, message: str, tmp_path: Path, tiny_products: Splits
) -> None:
    train, val, _ = tiny_products
    if model_path == "MISSING_DIR":
        model_path = str(tmp_path / "no-such-model")
    classifier = ProductClassifier(
        {"text_transformer": {"enabled": True, "model_path": model_path}}
    )
    with pytest.raises(ModelError, match=message) as info:
        classifier.fit(train, val, progress=False)
    assert SETTING in str(info.value)
    # Refused before any branch trains, not after the sparse and neural branches.
    assert classifier.branches == []


def test_directory_without_a_model_gives_the_path_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    model = TransformerTextClassifier(TextTransformerParams(enabled=True, model_path=str(tmp_path)))
    with pytest.raises(ModelError, match=f"{SETTING}: cannot load the pretrained model") as info:
        model.fit(["a", "b"], ["", ""], np.array([0, 1]), progress=False)
    assert str(tmp_path) in str(info.value)


def test_missing_transformers_package_names_the_extra_to_install(
    pretrained_dir: Path, tiny_products: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val, _ = tiny_products
    # A None entry makes `import transformers` fail, as when the package is not installed.
    monkeypatch.setitem(sys.modules, "transformers", None)
    section = transformer_section(pretrained_dir)
    hint = r"pip install 'rakuten-mlops\[transformer\]'"
    with pytest.raises(ModelError, match=hint):
        ProductClassifier({"text_transformer": section}).fit(train, val, progress=False)
    model = TransformerTextClassifier(TextTransformerParams(**section))
    with pytest.raises(ModelError, match=hint):
        model.fit(["a", "b"], ["", ""], np.array([0, 1]), progress=False)


@pytest.mark.slow
def test_the_package_does_not_import_transformers_by_default() -> None:
    code = (
        "import sys, rakuten_mlops.models.pipeline, rakuten_mlops.models.pyfunc; "
        "sys.exit('transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cross_fitting_the_transformer_is_refused(
    pretrained_dir: Path, tiny_products: Splits
) -> None:
    train, val, _ = tiny_products
    params = {
        "fusion": {"cross_fit_folds": 3},
        "text_transformer": transformer_section(pretrained_dir),
    }
    with pytest.raises(ModelError, match=r"cross_fit_folds to 0"):
        ProductClassifier(params).fit(train, val, progress=False)


def test_cuda_without_gpu_is_refused_for_training_and_falls_back_for_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"model\.text_transformer\.device is 'cuda'"):
        resolve_device("cuda")
    # A model fine-tuned on a GPU still loads and predicts on a CPU-only server.
    assert resolve_device("cuda:0", strict=False) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("text_transformer", {"max_length": 0}, "model.text_transformer.max_length"),
        ("text_transformer", {"epochs": 0}, "model.text_transformer.epochs"),
        ("text_transformer", {"batch_size": 2.5}, "model.text_transformer.batch_size"),
        ("text_transformer", {"learning_rate": 0}, "model.text_transformer.learning_rate"),
        ("text_transformer", {"learning_rate": "3e-5"}, r"write 3\.0e-5"),
        ("text_transformer", {"warmup_ratio": 1.0}, "model.text_transformer.warmup_ratio"),
        ("text_transformer", {"weight_decay": -0.1}, "model.text_transformer.weight_decay"),
        ("text_transformer", {"device": "tpu"}, "model.text_transformer.device"),
        ("text_transformer", {"allow_download": "yes"}, "model.text_transformer.allow_download"),
        ("text_transformer", {"model_path": 3}, "model.text_transformer.model_path"),
        ("fusion", {"transformer_weight": -1}, "model.fusion.transformer_weight"),
    ],
)
def test_bad_transformer_params_are_refused(
    section: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_model_params({section: values})


def test_good_transformer_params_parse() -> None:
    parsed = parse_model_params(
        {"text_transformer": {"device": "cuda:1", "learning_rate": 1, "warmup_ratio": 0}}
    )
    assert parsed.text_transformer.device == "cuda:1"
    assert parsed.text_transformer.learning_rate == 1
    assert parsed.text_transformer.enabled is False
