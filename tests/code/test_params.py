"""`rakuten_mlops.params`: every section of params.yaml checked by one module, one error type."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from rakuten_mlops.params import (
    DataParams,
    EvaluationSettings,
    FeedbackParams,
    GatePolicy,
    ModelParams,
    Params,
    ParamsError,
    SparseParams,
    load_params,
    parse_params,
)

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_the_project_params_file_parses_to_its_own_values() -> None:
    raw = load_params(REPO_PARAMS)
    parsed = parse_params(raw)
    assert parsed.seed == raw["seed"]
    assert parsed.data.feedback.enabled is True
    assert parsed.data.fractions()["train"] == pytest.approx(
        1 - raw["data"]["val_size"] - raw["data"]["test_size"] - raw["data"]["unseen_size"]
    )
    assert parsed.model.sparse.title_char_ngrams == tuple(
        raw["model"]["sparse"]["title_char_ngrams"]
    )
    assert parsed.gate.max_ece == raw["gate"]["max_ece"]
    assert parsed.review.target_precision == raw["review"]["target_precision"]
    assert parsed.evaluate.coverage_targets == tuple(raw["evaluate"]["coverage_targets"])


def test_missing_sections_and_keys_take_the_defaults() -> None:
    assert parse_params({}) == Params()
    assert parse_params(None) == Params()
    parsed = parse_params({"data": {"val_size": 0.2}, "gate": {"min_improvement": 0}})
    assert parsed.data == DataParams(val_size=0.2)
    assert parsed.gate == GatePolicy(min_improvement=0.0)
    assert parsed.model == ModelParams()
    assert parsed.evaluate == EvaluationSettings()
    assert parsed.data.feedback == FeedbackParams()


# One bad value per section: the message names the key path and the value found.
BAD_VALUES = [
    ({"seed": 1.5}, "seed", "`seed` must be an integer, got 1.5"),
    ({"data": {"val_size": 1.0}}, "data.val_size", "`data.val_size` must be < 1.0, got 1.0"),
    ({"data": {"source": 3}}, "data.source", "`data.source` must be a string, got 3"),
    (
        {"data": {"val_size": 0.5, "test_size": 0.3, "unseen_size": 0.2}},
        "data",
        "`data`: val_size + test_size + unseen_size must leave rows for train",
    ),
    (
        {"data": {"feedback": {"enabled": "yes"}}},
        "data.feedback.enabled",
        "`data.feedback.enabled` must be true or false, got 'yes'",
    ),
    (
        {"data": {"feedback": {"min_new_labels": -1}}},
        "data.feedback.min_new_labels",
        "`data.feedback.min_new_labels` must be >= 0, got -1",
    ),
    (
        {"model": {"sparse": {"nb_svm": 1}}},
        "model.sparse.nb_svm",
        "`model.sparse.nb_svm` must be true or false, got 1",
    ),
    (
        {"model": {"sparse": {"title_char_ngrams": [2]}}},
        "model.sparse.title_char_ngrams",
        "`model.sparse.title_char_ngrams` has too few items",
    ),
    (
        {"model": {"text_nn": {"epochs": 0}}},
        "model.text_nn.epochs",
        "`model.text_nn.epochs` must be >= 1, got 0",
    ),
    (
        {"model": {"image": {"channels": [32, "64"]}}},
        "model.image.channels.1",
        "`model.image.channels.1` must be an integer, got '64'",
    ),
    (
        {"model": {"fusion": {"sparse_weight": -0.5}}},
        "model.fusion.sparse_weight",
        "`model.fusion.sparse_weight` must be >= 0.0, got -0.5",
    ),
    (
        {"model": {"text_transformer": {"learning_rate": "3e-5"}}},
        "model.text_transformer.learning_rate",
        "must be a number, got '3e-5' (YAML reads 3e-5 as text: write 3.0e-5)",
    ),
    (
        {"model": {"text_transformer": {"device": "tpu"}}},
        "model.text_transformer.device",
        "`model.text_transformer.device` must be auto, cpu, cuda or cuda:<index>, got 'tpu'",
    ),
    ({"model": {"image": [1, 2]}}, "model.image", "`model.image` must be a mapping, got [1, 2]"),
    (
        {"review": {"target_precision": 1.0}},
        "review.target_precision",
        "`review.target_precision` must be < 1.0, got 1.0",
    ),
    ({"gate": {"max_ece": "low"}}, "gate.max_ece", "`gate.max_ece` must be a number, got 'low'"),
    (
        {"gate": {"min_weighted_f1": "0.7"}},
        "gate.min_weighted_f1",
        "`gate.min_weighted_f1` must be a number, got '0.7'",
    ),
    (
        {"evaluate": {"coverage_targets": [0.9, 1.5]}},
        "evaluate.coverage_targets.1",
        "`evaluate.coverage_targets.1` must be <= 1.0, got 1.5",
    ),
    (
        {"evaluate": {"calibration_bins": True}},
        "evaluate.calibration_bins",
        "`evaluate.calibration_bins` must be an integer, got True",
    ),
]


@pytest.mark.parametrize(("values", "key", "message"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_its_key_path(
    values: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ParamsError) as error:
        parse_params(values)
    assert error.value.key == key
    assert message in str(error.value)


UNKNOWN_KEYS = [
    (
        {"sede": 1},
        "unknown top-level key(s) sede (valid keys: data, evaluate, gate, model, review, seed)",
    ),
    ({"data": {"val_sise": 0.3}}, "unknown key(s) under `data`: val_sise (valid keys: feedback,"),
    (
        {"data": {"feedback": {"max_shar": 0.2}}},
        "unknown key(s) under `data.feedback`: max_shar (valid keys: dir, enabled, holdout_share,",
    ),
    ({"model": {"cnn": {}}}, "unknown key(s) under `model`: cnn (valid keys: fusion, image,"),
    (
        {"model": {"text_nn": {"epoch": 3, "lr": 1.0}}},
        "unknown key(s) under `model.text_nn`: epoch, lr (valid keys: batch_size, char_ngrams,",
    ),
    ({"gate": {"min_weigthed_f1": 0.6}}, "unknown key(s) under `gate`: min_weigthed_f1"),
    ({"evaluate": {"bins": 3}}, "unknown key(s) under `evaluate`: bins (valid keys: calibration"),
]


@pytest.mark.parametrize(("values", "message"), UNKNOWN_KEYS)
def test_an_unknown_key_is_refused_with_the_valid_ones(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParamsError) as error:
        parse_params(values)
    assert message in str(error.value)


def test_load_params_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    with pytest.raises(ParamsError, match="parameters file not found"):
        load_params(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"list\.yaml: expected a mapping at the top level"):
        load_params(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"model": {"fusion": {"refit": "no"}}}), encoding="utf-8")
    with pytest.raises(ParamsError) as error:
        load_params(typo)
    assert str(error.value).startswith(f"{typo}: `model.fusion.refit` must be true or false")
    assert error.value.key == "model.fusion.refit"


def test_model_params_round_trip_through_plain_lists() -> None:
    parsed = parse_params({"model": {"image": {"channels": [4, 8]}, "sparse": {"svc_c": 2}}})
    assert parsed.model.image.channels == (4, 8)
    assert parsed.model.sparse.svc_c == 2.0
    plain = parsed.model.to_dict()
    assert plain["image"]["channels"] == [4, 8]
    assert parse_params({"model": plain}).model == parsed.model


def test_sparse_params_pickled_under_the_former_module_still_load() -> None:
    # Registered models pickled their sparse branch with `rakuten_mlops.models.params`.
    params = SparseParams(svc_c=1.5, title_char_ngrams=(3, 4))
    payload = pickle.dumps(params, protocol=2)
    assert b"crakuten_mlops.params\nSparseParams\n" in payload
    former = payload.replace(b"crakuten_mlops.params\n", b"crakuten_mlops.models.params\n")
    assert pickle.loads(former) == params
