"""The fitted classifier at inference: cleaning -> features -> branches -> fusion -> label.

`Classifier` holds what a prediction needs (the branches, their temperatures, the fusion,
the label map) and `save`/`load` keep all of it (vocabularies, weights, params) in one
directory. Fitting is `models/pipeline.py` (`ProductClassifier`, a `Classifier` that can
also fit); the output columns are `models/output.py`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import joblib
import numpy as np
import pandas as pd
import torch

from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.features.image_tensors import decode_image
from rakuten_mlops.features.text import clean_text
from rakuten_mlops.models.fusion import LogLinearFusion, log_softmax, softmax
from rakuten_mlops.models.image import ImageClassifier
from rakuten_mlops.models.output import (
    TopPredictions,
    build_output,
    category_name,
    empty_output,
    top_predictions,
)
from rakuten_mlops.models.review import DEFAULT_TARGET_PRECISION, ReviewRule
from rakuten_mlops.models.sparse import SparseTextModel
from rakuten_mlops.models.text_nn import NeuralTextClassifier
from rakuten_mlops.models.transformer import TransformerTextClassifier
from rakuten_mlops.models.word_vectors import WordVectorModel
from rakuten_mlops.params import ModelParams, parse_model_params

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "classifier.json"
SPARSE_FILE = "sparse.joblib"
TEXT_NN_FILE = "text_nn.pt"
TEXT_NN_TOKENIZER_FILE = "text_nn_tokenizer.json"
IMAGE_FILE = "image.pt"
# The fine-tuned transformer and its tokenizer (`save_pretrained` layout).
TRANSFORMER_DIR = "transformer"
WORD_VECTORS_FILE = "word_vectors.joblib"
# Text branches in fusion order; `_fusion_inputs` averages them with `model.fusion` weights.
TEXT_BRANCHES = ("sparse", "text_nn", "transformer")
# Branches the fusion weighs on their own (a learnt weight each), in fusion order.
SEPARATE_BRANCHES = ("word_vectors", "image")


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def clean_column(frame: pd.DataFrame, column: str, *, required: bool) -> list[str]:
    """Cleaned strings of one text column; missing values are "" unless the field is required."""
    if column not in frame.columns:
        if required:
            raise DataError(
                f"input has no `{column}` column (columns: {', '.join(map(str, frame.columns))})"
            )
        return [""] * len(frame)
    texts = []
    for index, value in zip(frame.index, frame[column].tolist(), strict=True):
        if _is_missing(value):
            if required:
                raise DataError(f"row {index}: field `{column}` is required, got no value")
            texts.append("")
        elif not isinstance(value, str):
            raise DataError(
                f"row {index}: field `{column}` must be a string, got {type(value).__name__}"
            )
        else:
            texts.append(clean_text(value))
    return texts


def _image_bytes(value: object) -> bytes | None:
    """Raw bytes of an `image_bytes` cell; base64 text is accepted (JSON transports)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str) and value:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


class Classifier:
    """The whole inference pipeline: cleaning -> features -> branches -> fusion -> label."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        seed: int = 42,
        *,
        target_precision: float = DEFAULT_TARGET_PRECISION,
    ) -> None:
        self.model_params: ModelParams = parse_model_params(params)
        # The precision the review rule fitted with the model aims at (`review.target_precision`).
        self.target_precision = target_precision
        self.review_rule: ReviewRule | None = None
        # The resolved hyperparameters (defaults filled in), as logged and saved.
        self.params: dict[str, Any] = self.model_params.to_dict()
        self.seed = seed
        self.classes_: np.ndarray = np.array([], dtype=np.int64)
        self.history: dict[str, list[float]] = {}
        self.timings: dict[str, float] = {}
        self.sparse: SparseTextModel | None = None
        self.text_nn: NeuralTextClassifier | None = None
        self.transformer: TransformerTextClassifier | None = None
        self.word_vectors: WordVectorModel | None = None
        self.image: ImageClassifier | None = None
        self.temperatures: dict[str, float] = {}
        self.fusion: LogLinearFusion | None = None
        # Epochs of the neural text refit on train + val when cross-fitted (None: holdout).
        self.text_nn_epochs: int | None = None
        # Branches trained on train + val (cross-fitted or refit), in fusion order.
        self.refit_branches: list[str] = []

    # ------------------------------------------------------------------ training

    @property
    def branches(self) -> list[str]:
        """Names of the fitted branches, in fusion order."""
        names = []
        if self.sparse is not None:
            names.append("sparse")
        if self.text_nn is not None:
            names.append("text_nn")
        if self.transformer is not None:
            names.append("transformer")
        if self.word_vectors is not None:
            names.append("word_vectors")
        if self.image is not None:
            names.append("image")
        return names

    def word_vocabulary(self) -> frozenset[str]:
        """The single words the text branches learned (title and description words of the
        sparse branch, word features of the neural text branch); empty without text branch.

        Drift monitoring measures out-of-vocabulary words against it.
        """
        words: set[str] = set()
        if self.sparse is not None:
            for name in ("title_words", "description_words"):
                vectorizer = self.sparse.vectorizers.get(name)
                vocabulary = getattr(vectorizer, "vocabulary_", None) or {}
                words.update(term for term in vocabulary if " " not in term)
        tokenizer = getattr(self.text_nn, "tokenizer", None)
        if tokenizer is not None:
            words.update(
                feature[2:]
                for feature in tokenizer.vocabulary
                if feature.startswith(("t:", "d:")) and " " not in feature
            )
        return frozenset(words)

    def _add_timing(self, key: str, seconds: float) -> None:
        # Cross-fitting trains a branch several times: its timing is the total cost.
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    # ------------------------------------------------------------------ inference

    def _fusion_inputs(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calibrated log-probabilities: the text branches pooled, the others apart.

        Each branch is first temperature-scaled (so a weak branch is a flat distribution
        and cannot shout), then the text branches are averaged with the fixed weights of
        `model.fusion` (the validation split is too small to tell good weights apart: see
        bench/README.md), and the fusion learns one scale for the text, one for the word
        vectors and one for the image, and the class biases.
        """
        fusion = self.model_params.fusion
        weights = {
            "sparse": fusion.sparse_weight,
            "text_nn": fusion.text_nn_weight,
            "transformer": fusion.transformer_weight,
        }
        calibrated = {
            name: log_softmax(self.temperatures[name] * values) for name, values in scores.items()
        }
        text = [name for name in TEXT_BRANCHES if name in calibrated]
        total = sum(weights[name] for name in text)
        if total <= 0:
            raise ModelError(
                "model.fusion: the weights of the fitted text branches "
                f"({', '.join(f'{name}_weight' for name in text)}) must sum to a positive number"
            )
        inputs = {"text": sum((weights[name] / total) * calibrated[name] for name in text)}
        for name in SEPARATE_BRANCHES:
            if name in calibrated:
                inputs[name] = calibrated[name]
        return inputs  # type: ignore[return-value]

    def _check_fitted(self) -> LogLinearFusion:
        if self.fusion is None or not len(self.classes_):
            raise ModelError("the classifier is not fitted: call fit() or load()")
        return self.fusion

    def _decode_images(self, frame: pd.DataFrame) -> list[np.ndarray | None]:
        """One image per row from `image_bytes`, else `image_path`; None when unusable."""
        assert self.image is not None
        size = self.model_params.image.image_size
        n = len(frame)
        raw_bytes = frame["image_bytes"].tolist() if "image_bytes" in frame.columns else [None] * n
        paths = frame["image_path"].tolist() if "image_path" in frame.columns else [None] * n
        images: list[np.ndarray | None] = []
        for data, path in zip(raw_bytes, paths, strict=True):
            image = None
            content = _image_bytes(data)
            if content:
                image = decode_image(content, size)
            if image is None and isinstance(path, str) and path:
                image = decode_image(Path(path), size)
            images.append(image)
        return images

    def _branch_scores(
        self, frame: pd.DataFrame
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Raw scores of each branch and the rows where each is available."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        titles = clean_column(frame, "designation", required=True)
        descriptions = clean_column(frame, "description", required=False)
        scores: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        if self.sparse is not None:
            scores["sparse"] = self.sparse.decision_function(titles, descriptions)
        if self.text_nn is not None:
            scores["text_nn"] = self.text_nn.predict_log_proba(titles, descriptions)
        if self.transformer is not None:
            scores["transformer"] = self.transformer.predict_log_proba(titles, descriptions)
        if self.word_vectors is not None:
            scores["word_vectors"] = self.word_vectors.predict_log_proba(titles, descriptions)
        if self.image is not None:
            images = self._decode_images(frame)
            rows = [i for i, image in enumerate(images) if image is not None]
            image_scores = np.full((len(frame), len(self.classes_)), np.nan)
            if rows:
                image_scores[rows] = self.image.predict_log_proba(stack_images(images, rows))
            mask = np.zeros(len(frame), dtype=bool)
            mask[rows] = True
            scores["image"], masks["image"] = image_scores, mask
        return scores, masks

    def predict_branches(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-branch calibrated probabilities and the fused ones.

        Returns:
            `sparse`, `image` (NaN rows where no usable image; NaN everywhere when the
            branch is not part of the model), `text_nn`, `transformer` and `word_vectors`
            only when the model has these optional branches, `fused`: arrays (n, n_classes).
        """
        fusion = self._check_fitted()
        scores, masks = self._branch_scores(frame)
        result: dict[str, np.ndarray] = {}
        # The optional branches are reported only when fitted: a column of NaN in every
        # default evaluation would only add a meaningless `<branch>_coverage` metric.
        optional = ("text_nn", "transformer", "word_vectors")
        names = ["sparse", *(name for name in optional if name in scores)]
        names.append("image")
        for name in names:
            if name not in scores:
                result[name] = np.full((len(frame), len(self.classes_)), np.nan)
                continue
            probs = softmax(self.temperatures[name] * np.nan_to_num(scores[name], nan=0.0))
            if name in masks:
                probs[~masks[name]] = np.nan
            result[name] = probs
        result["fused"] = np.exp(fusion.predict_log_proba(self._fusion_inputs(scores), masks))
        return result

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Fused probabilities (n, n_classes), columns in `classes_` order.

        Raises:
            DataError: `designation` is missing or a field has the wrong type.
            ModelError: the classifier is not fitted.
        """
        fusion = self._check_fitted()
        if len(frame) == 0:
            return np.zeros((0, len(self.classes_)))
        scores, masks = self._branch_scores(frame)
        return np.exp(fusion.predict_log_proba(self._fusion_inputs(scores), masks))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predicted code, category, confidence and top-3 per row (index = `frame.index`)."""
        if len(frame) == 0:
            self._check_fitted()
            return empty_output(frame.index)
        return build_output(self.predict_top(frame), frame.index)

    def predict_top(self, frame: pd.DataFrame) -> TopPredictions:
        """The three most probable codes of each row, as arrays (what `predict` puts in its
        DataFrame; the service reads them directly, without a DataFrame per answer)."""
        fusion = self._check_fitted()
        if len(frame) == 0:
            return top_predictions(
                np.zeros((0, len(self.classes_))),
                self.classes_,
                np.zeros(0, dtype=bool),
                self.review_rule,
            )
        scores, masks = self._branch_scores(frame)
        probs = np.exp(fusion.predict_log_proba(self._fusion_inputs(scores), masks))
        has_image = masks.get("image", np.zeros(len(frame), dtype=bool))
        return top_predictions(probs, self.classes_, has_image, self.review_rule)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        """Write the model (params, label map, vocabularies, weights) into `directory`."""
        fusion = self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "params": self.params,
            "seed": self.seed,
            "classes": self.classes_.tolist(),
            "category_names": {str(code): category_name(code) for code in self.classes_.tolist()},
            "branches": self.branches,
            "temperatures": self.temperatures,
            "fusion": fusion.state(),
            "text_nn_epochs": self.text_nn_epochs,
            "refit_branches": self.refit_branches,
            "history": self.history,
            "timings": self.timings,
            "target_precision": self.target_precision,
            "review_rule": self.review_rule.to_dict() if self.review_rule else None,
        }
        (directory / META_FILE).write_text(
            json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        if self.sparse is not None:
            # zlib level 3: the float32 coefficients and vocabularies shrink ~2.6x (59 -> 22 MB
            # on the sample) for ~7 s more per save; loading is as fast.
            joblib.dump(self.sparse, directory / SPARSE_FILE, compress=3)
        if self.text_nn is not None:
            state = self.text_nn.state()
            (directory / TEXT_NN_TOKENIZER_FILE).write_text(
                json.dumps(state["tokenizer"], ensure_ascii=False), encoding="utf-8"
            )
            torch.save(
                {"n_classes": state["n_classes"], "weights": state["weights"]},
                directory / TEXT_NN_FILE,
            )
        if self.transformer is not None:
            self.transformer.save(directory / TRANSFORMER_DIR)
        if self.word_vectors is not None:
            joblib.dump(self.word_vectors, directory / WORD_VECTORS_FILE, compress=3)
        if self.image is not None:
            torch.save(self.image.state(), directory / IMAGE_FILE)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a model written by `save`.

        Raises:
            ModelError: the directory does not hold a readable model.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise ModelError(f"no classifier in {directory}: {META_FILE} not found")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelError(
                    f"{meta_path}: format version {meta.get('format_version')} is not supported "
                    f"(expected {FORMAT_VERSION})"
                )
            model = cls(meta["params"], seed=int(meta["seed"]))
            model.classes_ = np.asarray(meta["classes"], dtype=np.int64)
            model.temperatures = {k: float(v) for k, v in meta["temperatures"].items()}
            model.fusion = LogLinearFusion.from_state(meta["fusion"])
            model.history = meta.get("history", {})
            model.text_nn_epochs = meta.get("text_nn_epochs")
            model.refit_branches = list(meta.get("refit_branches", []))
            model.timings = meta.get("timings", {})
            model.target_precision = float(meta.get("target_precision", DEFAULT_TARGET_PRECISION))
            rule = meta.get("review_rule")
            model.review_rule = ReviewRule.from_dict(rule) if rule else None
            branches = meta["branches"]
            if "sparse" in branches:
                model.sparse = joblib.load(directory / SPARSE_FILE)
            if "text_nn" in branches:
                tokenizer = json.loads(
                    (directory / TEXT_NN_TOKENIZER_FILE).read_text(encoding="utf-8")
                )
                weights = torch.load(
                    directory / TEXT_NN_FILE, map_location="cpu", weights_only=True
                )
                model.text_nn = NeuralTextClassifier.from_state(
                    model.model_params.text_nn, {"tokenizer": tokenizer, **weights}, model.seed
                )
            if "transformer" in branches:
                model.transformer = TransformerTextClassifier.load(
                    directory / TRANSFORMER_DIR, model.model_params.text_transformer, model.seed
                )
            if "word_vectors" in branches:
                model.word_vectors = joblib.load(directory / WORD_VECTORS_FILE)
            if "image" in branches:
                state = torch.load(directory / IMAGE_FILE, map_location="cpu", weights_only=True)
                model.image = ImageClassifier.from_state(
                    model.model_params.image, state, model.seed
                )
        except ModelError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, EOFError) as exc:
            raise ModelError(f"cannot load the classifier from {directory}: {exc}") from exc
        return model


def stack_images(images: Sequence[np.ndarray | None], rows: Sequence[int]) -> np.ndarray:
    """The decoded images of `rows` as one (n, H, W, 3) array."""
    selected = [images[i] for i in rows]
    return np.stack([image for image in selected if image is not None])


__all__ = ["Classifier", "clean_column", "stack_images"]
