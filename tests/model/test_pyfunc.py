"""The classifier as an MLflow pyfunc model: save -> load -> predict gives the same answers."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from rakuten_mlops.errors import ModelError
from rakuten_mlops.inference.model_io import (
    build_model_input,
    check_model_output,
    items_predictor,
    read_predictions,
)
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.pyfunc import (
    load_pyfunc_model,
    log_pyfunc_model,
    native_classifier,
    pip_requirements,
    save_pyfunc_model,
)
from rakuten_mlops.schema import OUTPUT_COLUMNS


@pytest.fixture(scope="module")
def saved_model(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    _, _, test = tiny_products
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    return save_pyfunc_model(
        tiny_classifier, path, test[["designation", "description", "image_path"]]
    )


def model_input(test: pd.DataFrame) -> pd.DataFrame:
    """Test products with paths, bytes, a corrupt image and a missing description."""
    frame = test[["designation", "description", "image_path"]].head(20).copy()
    frame["image_bytes"] = [
        Path(p).read_bytes() if p and i % 4 == 0 else None
        for i, p in enumerate(frame["image_path"])
    ]
    frame.iloc[1, frame.columns.get_loc("image_bytes")] = b"corrupt"
    frame.iloc[2, frame.columns.get_loc("description")] = None
    return frame


def test_saved_pyfunc_predicts_exactly_like_the_classifier(
    saved_model: Path,
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    frame = model_input(tiny_products[2])
    loaded = mlflow.pyfunc.load_model(str(saved_model))
    predicted = loaded.predict(frame)
    expected = tiny_classifier.predict(frame)
    pd.testing.assert_frame_equal(predicted, expected)
    assert tuple(predicted.columns) == OUTPUT_COLUMNS
    assert predicted["has_image"].sum() == expected["has_image"].sum() > 0
    # Text only, through the signature (optional columns absent).
    text_only = loaded.predict(
        pd.DataFrame({"designation": ["Piscine gonflable", "Roman de poche"]})
    )
    assert text_only["prdtypecode"].tolist() == [2583, 10]


def test_service_reads_the_same_predictions_straight_from_the_classifier(
    saved_model: Path, tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    """The service's reader (top-3 arrays, no output DataFrame) and the CSV batch reader
    (output DataFrame) give the same items, also for a model that is not this project's."""
    frame = model_input(tiny_products[2])
    model_frame, notes = build_model_input(
        frame["designation"].tolist(),
        frame["description"].tolist(),
        image_bytes=frame["image_bytes"].tolist(),
    )
    loaded = load_pyfunc_model(saved_model)
    assert native_classifier(loaded) is not None
    direct = items_predictor(loaded)(model_frame, notes)
    through_output = read_predictions(
        check_model_output(loaded.predict(model_frame), len(model_frame)), notes
    )
    assert [i.prdtypecode for i in direct] == [i.prdtypecode for i in through_output]
    assert [i.has_image for i in direct] == [i.has_image for i in through_output]
    assert sum(i.has_image for i in direct) > 0
    assert [i.note for i in direct] == [i.note for i in through_output]
    for a, b in zip(direct, through_output, strict=True):
        assert [t.code for t in a.top3] == [t.code for t in b.top3]
        assert a.confidence == pytest.approx(b.confidence, abs=1e-12)
        assert [t.probability for t in a.top3] == pytest.approx(
            [t.probability for t in b.top3], abs=1e-12
        )
        assert a.category == b.category != ""
    assert items_predictor(loaded)(model_frame.iloc[:0], []) == []

    class Foreign:  # any pyfunc-like model: only `predict`
        def predict(self, data: pd.DataFrame) -> pd.DataFrame:
            return loaded.predict(data)

    assert native_classifier(Foreign()) is None
    foreign = items_predictor(Foreign())(model_frame, notes)
    assert [i.prdtypecode for i in foreign] == [i.prdtypecode for i in direct]


def test_saved_model_is_self_contained(
    saved_model: Path, tiny_classifier: ProductClassifier
) -> None:
    mlmodel = yaml.safe_load((saved_model / "MLmodel").read_text(encoding="utf-8"))
    inputs = {c["name"]: c for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs["designation"]["type"] == "string"
    assert inputs["designation"].get("required", True) is True
    assert inputs["description"]["required"] is False
    assert inputs["image_bytes"]["type"] == "binary"
    outputs = [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])]
    assert tuple(outputs) == OUTPUT_COLUMNS
    assert mlmodel["metadata"]["classes"] == tiny_classifier.classes_.tolist()
    assert mlmodel["metadata"]["category_names"]["2583"] == "Piscine"
    assert (saved_model / "input_example.json").is_file()
    # The package travels with the model, without bytecode caches.
    code = saved_model / "code" / "rakuten_mlops"
    assert (code / "models" / "pipeline.py").is_file()
    assert not list(code.rglob("__pycache__"))
    artifacts = saved_model / "artifacts"
    assert (
        json.loads((artifacts / "label_map.json").read_text(encoding="utf-8"))["10"]
        == "Livre occasion"
    )
    assert (artifacts / "classifier" / "classifier.json").is_file()
    # A model from code: the entry file is run at load time, no pickled Python object.
    assert mlmodel["flavors"]["python_function"]["loader_module"].endswith("code_model")
    assert (saved_model / "pyfunc_entry.py").is_file()
    assert not list(saved_model.rglob("*.pkl"))


def test_requirements_are_pinned_and_exclude_dev_tools(saved_model: Path) -> None:
    requirements = (saved_model / "requirements.txt").read_text(encoding="utf-8").split()
    names = {line.split("==")[0] for line in requirements}
    assert {
        "mlflow",
        "torch",
        "scikit-learn",
        "pandas",
        "numpy",
        "scipy",
        "pillow",
        "pyarrow",
    } <= names
    assert all("==" in line for line in requirements)
    assert not names & {"pytest", "ruff", "mypy"}
    assert "torch==2.13.0" in pip_requirements()


def test_classifier_save_load_round_trip(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
) -> None:
    frame = model_input(tiny_products[2])
    tiny_classifier.save(tmp_path / "clf")
    loaded = ProductClassifier.load(tmp_path / "clf")
    np.testing.assert_array_equal(loaded.classes_, tiny_classifier.classes_)
    assert loaded.params == tiny_classifier.params
    assert loaded.history == tiny_classifier.history
    np.testing.assert_array_equal(loaded.predict_proba(frame), tiny_classifier.predict_proba(frame))


def test_loading_errors_are_clear(saved_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="MLmodel file not found"):
        load_pyfunc_model(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="cannot load the model models:/no-such-model/1"):
        load_pyfunc_model("models:/no-such-model/1")
    with pytest.raises(ModelError, match=r"classifier\.json not found"):
        ProductClassifier.load(tmp_path)
    with pytest.raises(ModelError, match="exists and is not empty"):
        save_pyfunc_model(
            ProductClassifier.load(saved_model / "artifacts" / "classifier"),
            saved_model,
            pd.DataFrame({"designation": ["x"]}),
        )


def test_log_requires_a_run_then_loads_by_run_and_registry_uri(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
) -> None:
    example = tiny_products[2][["designation", "description"]]
    with pytest.raises(ModelError, match="active MLflow run"):
        log_pyfunc_model(tiny_classifier, example)
    # An experiment of its own: the Default one stores artifacts in ./mlruns of the cwd.
    experiment = mlflow.create_experiment("pyfunc", artifact_location=tmp_path.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_pyfunc_model(tiny_classifier, example, registered_model_name="tiny-classifier")
    assert info.registered_model_version == 1
    frame = pd.DataFrame({"designation": ["Collier pour chien"]})
    by_run = load_pyfunc_model(f"runs:/{run.info.run_id}/model").predict(frame)
    by_name = load_pyfunc_model("models:/tiny-classifier/1").predict(frame)
    pd.testing.assert_frame_equal(by_run, by_name)
    assert by_run["prdtypecode"].tolist() == [2220]
