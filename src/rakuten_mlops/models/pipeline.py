"""The whole inference pipeline as one object: cleaning -> features -> branches -> fusion.

`ProductClassifier.fit` fits the fusion (and each branch's temperature) on scores of
products the branches never saw, so the fused probabilities are calibrated: either the
validation split (holdout), or, with `model.fusion.cross_fit_folds` >= 2, out-of-fold scores
of the text branches over train + val, which are then refit on all of train + val.
`save`/`load` keep everything the model needs at inference (vocabularies, label map,
weights, params) in one directory.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.features.image_tensors import decode_image, load_images
from rakuten_mlops.features.text import clean_text, normalize_for_dedup
from rakuten_mlops.models.fusion import LogLinearFusion, fit_temperature, log_softmax, softmax
from rakuten_mlops.models.image import ImageClassifier
from rakuten_mlops.params import ModelParams, parse_model_params
from rakuten_mlops.models.sparse import SparseTextModel
from rakuten_mlops.models.text_nn import NeuralTextClassifier
from rakuten_mlops.models.transformer import TransformerTextClassifier, check_transformer_setup
from rakuten_mlops.schema import CATEGORY_NAMES, OUTPUT_COLUMNS, TARGET_COL

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "classifier.json"
SPARSE_FILE = "sparse.joblib"
TEXT_NN_FILE = "text_nn.pt"
TEXT_NN_TOKENIZER_FILE = "text_nn_tokenizer.json"
IMAGE_FILE = "image.pt"
# The fine-tuned transformer and its tokenizer (`save_pretrained` layout).
TRANSFORMER_DIR = "transformer"
# Text branches in fusion order; `_fusion_inputs` averages them with `model.fusion` weights.
_TEXT_BRANCHES = ("sparse", "text_nn", "transformer")

_TRAINING_COLUMNS = ("designation", "description", "image_path", TARGET_COL)
# The image branch is skipped when training has fewer images than this.
_MIN_TRAIN_IMAGES = 10


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _clean_column(frame: pd.DataFrame, column: str, *, required: bool) -> list[str]:
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


class ProductClassifier:
    """The whole inference pipeline: cleaning -> features -> branches -> fusion -> label."""

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 42) -> None:
        self.model_params: ModelParams = parse_model_params(params)
        # The resolved hyperparameters (defaults filled in), as logged and saved.
        self.params: dict[str, Any] = self.model_params.to_dict()
        self.seed = seed
        self.classes_: np.ndarray = np.array([], dtype=np.int64)
        self.history: dict[str, list[float]] = {}
        self.timings: dict[str, float] = {}
        self.sparse: SparseTextModel | None = None
        self.text_nn: NeuralTextClassifier | None = None
        self.transformer: TransformerTextClassifier | None = None
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

    def _check_training_frame(self, frame: pd.DataFrame, split: str) -> None:
        missing = [column for column in _TRAINING_COLUMNS if column not in frame.columns]
        if missing:
            raise DataError(f"{split} split: missing column(s) {', '.join(missing)}")
        if frame.empty:
            raise DataError(f"{split} split: no rows")
        if frame[TARGET_COL].isna().any():
            row = frame.index[frame[TARGET_COL].isna()][0]
            raise DataError(f"{split} split, row {row}: field `{TARGET_COL}` is missing")

    def fit(
        self, train: pd.DataFrame, val: pd.DataFrame, *, progress: bool = True
    ) -> ProductClassifier:
        """Train the branches, then the temperatures and the fusion on held-out scores.

        Holdout (`model.fusion.cross_fit_folds` < 2): branches on `train`, fusion on `val`.
        Cross-fitted: K-fold out-of-fold scores of the text branches over `train` + `val`
        fit the fusion, then the text branches are refit on `train` + `val`; the image
        branch is trained on `train` and fused on `val` either way.

        Args:
            train: processed training split (`designation`, `description`, `image_path`,
                `prdtypecode`; `image_path` absolute or "").
            val: processed validation split, same columns.
            progress: show tqdm bars on stderr.

        Raises:
            DataError: a split lacks a column, has no rows or no label.
            ModelError: training failed (for instance fewer than two classes).
        """
        self._check_training_frame(train, "train")
        self._check_training_frame(val, "val")
        p = self.model_params
        if not (p.sparse.enabled or p.text_nn.enabled or p.text_transformer.enabled):
            raise ModelError(
                "at least one text branch (model.sparse, model.text_nn or "
                "model.text_transformer) must be enabled"
            )
        if p.text_transformer.enabled and p.fusion.cross_fit_folds >= 2:
            # Cross-fitting would fine-tune the transformer once per fold plus once more.
            raise ModelError(
                "model.text_transformer cannot be cross-fitted: set "
                "model.fusion.cross_fit_folds to 0 when the transformer branch is enabled"
            )
        if p.text_transformer.enabled:
            check_transformer_setup(p.text_transformer)
        started = time.perf_counter()
        self.history, self.timings, self.temperatures = {}, {}, {}
        self.sparse = self.text_nn = self.transformer = self.image = None
        self.text_nn_epochs = None
        self.refit_branches = []
        self.classes_ = np.unique(train[TARGET_COL].to_numpy(dtype=np.int64))
        if len(self.classes_) < 2:
            raise ModelError(f"training needs at least two classes, got {self.classes_.tolist()}")
        y_train = np.searchsorted(self.classes_, train[TARGET_COL].to_numpy(dtype=np.int64))
        known = np.isin(val[TARGET_COL].to_numpy(dtype=np.int64), self.classes_)
        if not known.all():
            logger.warning(
                "val split: %d row(s) with classes unseen in training are ignored", (~known).sum()
            )
            val = val.loc[known]
            if val.empty:
                raise DataError("val split: no row has a class seen in training")
        y_val = np.searchsorted(self.classes_, val[TARGET_COL].to_numpy(dtype=np.int64))

        train_titles = _clean_column(train, "designation", required=True)
        train_descriptions = _clean_column(train, "description", required=False)
        val_titles = _clean_column(val, "designation", required=True)
        val_descriptions = _clean_column(val, "description", required=False)

        folds = p.fusion.cross_fit_folds
        pool_labels = np.concatenate([y_train, y_val])
        if folds >= 2 and np.bincount(pool_labels, minlength=len(self.classes_)).min() < folds:
            logger.warning(
                "model.fusion.cross_fit_folds = %d, but a class has fewer products: "
                "the fusion is fit on the val split instead",
                folds,
            )
            folds = 0
        val_masks: dict[str, np.ndarray] = {}
        if folds >= 2:
            # Held-out scores of every train + val product; the fusion learns from all of them.
            held_out = self._cross_fit_text(
                train_titles + val_titles,
                train_descriptions + val_descriptions,
                pool_labels,
                _dedup_groups(pd.concat([train, val])),
                folds,
                progress=progress,
            )
            fusion_labels = pool_labels
            self.refit_branches = [b for b in self.branches if b != "image"]
        else:
            held_out = self._fit_text(
                train_titles,
                train_descriptions,
                y_train,
                (val_titles, val_descriptions, y_val),
                progress=progress,
            )
            fusion_labels = y_val
        if p.image.enabled:
            image_scores: dict[str, np.ndarray] = {}
            self._fit_image(train, val, y_train, y_val, image_scores, val_masks, progress=progress)
            if "image" in image_scores and folds >= 2:
                # Only the val products have held-out image scores: the train rows count as
                # products without an image for the fusion.
                n_train = len(train)
                scores = np.full((n_train + len(val), len(self.classes_)), np.nan)
                scores[n_train:] = image_scores["image"]
                val_masks["image"] = np.concatenate(
                    [np.zeros(n_train, dtype=bool), val_masks["image"]]
                )
                image_scores["image"] = scores
            held_out.update(image_scores)

        tick = time.perf_counter()
        for name, scores in held_out.items():
            mask = val_masks.get(name, np.ones(len(scores), dtype=bool))
            self.temperatures[name] = fit_temperature(scores[mask], fusion_labels[mask])
        fusion_inputs = self._fusion_inputs(held_out)
        self.fusion = LogLinearFusion(list(fusion_inputs), p.fusion.bias_l2, p.fusion.max_iter)
        self.fusion.fit(fusion_inputs, fusion_labels, val_masks)
        self.timings["fit/fusion"] = time.perf_counter() - tick
        if p.fusion.refit:
            self.refit(train, val, progress=progress)
        self.timings["fit/total"] = time.perf_counter() - started
        return self

    def refit(self, train: pd.DataFrame, val: pd.DataFrame, *, progress: bool = True) -> None:
        """Refit every branch not trained on train + val yet on all of train + val.

        Called by `fit` when `model.fusion.refit` is true, after the temperatures and the
        fusion were fit on held-out scores: they are kept, and each branch is trained again
        with the same hyperparameters and seed on every labelled product (train + val), so
        the model learns from the val split too. The text branches of a cross-fitted model
        are refit already; the image branch is refit here either way. The holdout curves
        stay in `history`; each refit adds its `<branch>/refit_train_loss`.

        Raises:
            ModelError: the classifier has no fusion yet (call `fit` first).
        """
        self._check_fitted()
        known = np.isin(val[TARGET_COL].to_numpy(dtype=np.int64), self.classes_)
        val = val.loc[known]
        pool = pd.concat([train, val])
        labels = np.searchsorted(self.classes_, pool[TARGET_COL].to_numpy(dtype=np.int64))
        curves = dict(self.history)
        text = [b for b in self.branches if b != "image" and b not in self.refit_branches]
        if text:  # holdout: the text branches saw train only
            self.history = {}
            self._fit_text(
                _clean_column(pool, "designation", required=True),
                _clean_column(pool, "description", required=False),
                labels,
                None,
                progress=progress,
                timing_prefix="refit",
            )
            for branch in ("text_nn", "transformer"):
                if f"{branch}/train_loss" in self.history:
                    curves[f"{branch}/refit_train_loss"] = self.history[f"{branch}/train_loss"]
            self.refit_branches += text
        if self.image is not None and "image" not in self.refit_branches:
            tick = time.perf_counter()
            p = self.model_params.image
            images = load_images(
                pool["image_path"].fillna("").tolist(),
                p.image_size,
                Path(p.cache_dir) if p.cache_dir else None,
                progress=progress,
                desc="train + val images",
            )
            rows = [i for i, image in enumerate(images) if image is not None]
            image = ImageClassifier(p, self.seed)
            refit_curves = image.fit(
                _stack_images(images, rows), labels[rows], len(self.classes_), progress=progress
            )
            self.image = image
            curves["image/refit_train_loss"] = refit_curves["train_loss"]
            self.timings["refit/image"] = time.perf_counter() - tick
            self.refit_branches.append("image")
        self.history = curves

    def _add_timing(self, key: str, seconds: float) -> None:
        # Cross-fitting trains a branch several times: its timing is the total cost.
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def _fit_text(
        self,
        titles: list[str],
        descriptions: list[str],
        labels: np.ndarray,
        held_out: tuple[list[str], list[str], np.ndarray] | None,
        *,
        progress: bool,
        timing_prefix: str = "fit",
    ) -> dict[str, np.ndarray]:
        """Fit the enabled text branches into `self`; return their raw scores on `held_out`.

        The neural branches' per-epoch curves (on `held_out`) are left in `self.history`
        under `text_nn/<curve>` and `transformer/<curve>`.
        """
        p = self.model_params
        scores: dict[str, np.ndarray] = {}
        if p.sparse.enabled:
            tick = time.perf_counter()
            self.sparse = SparseTextModel(p.sparse, self.seed).fit(
                titles, descriptions, labels, progress=progress
            )
            if held_out is not None:
                scores["sparse"] = self.sparse.decision_function(held_out[0], held_out[1])
            self._add_timing(f"{timing_prefix}/sparse", time.perf_counter() - tick)
        if p.text_nn.enabled:
            tick = time.perf_counter()
            self.text_nn = NeuralTextClassifier(p.text_nn, self.seed)
            curves = self.text_nn.fit(titles, descriptions, labels, val=held_out, progress=progress)
            self.history.update({f"text_nn/{key}": values for key, values in curves.items()})
            if held_out is not None:
                scores["text_nn"] = self.text_nn.predict_log_proba(held_out[0], held_out[1])
            self._add_timing(f"{timing_prefix}/text_nn", time.perf_counter() - tick)
        if p.text_transformer.enabled:
            tick = time.perf_counter()
            self.transformer = TransformerTextClassifier(p.text_transformer, self.seed)
            curves = self.transformer.fit(
                titles, descriptions, labels, val=held_out, progress=progress
            )
            self.history.update({f"transformer/{key}": values for key, values in curves.items()})
            if held_out is not None:
                scores["transformer"] = self.transformer.predict_log_proba(held_out[0], held_out[1])
            self._add_timing(f"{timing_prefix}/transformer", time.perf_counter() - tick)
        return scores

    def _cross_fit_text(
        self,
        titles: list[str],
        descriptions: list[str],
        labels: np.ndarray,
        groups: np.ndarray,
        n_folds: int,
        *,
        progress: bool,
    ) -> dict[str, np.ndarray]:
        """Out-of-fold scores of the text branches, then the branches refit on all rows.

        Folds are stratified by class and grouped by normalised text, so a duplicated
        product never scores itself. The neural branch's curves are averaged over the folds;
        its refit trains for the same fixed epoch count as the folds.
        """
        n_classes = len(self.classes_)
        oof: dict[str, np.ndarray] = {}
        fold_curves: list[dict[str, list[float]]] = []
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=self.seed)
        splits = list(splitter.split(np.zeros(len(labels)), labels, groups))
        bar = tqdm(total=n_folds + 1, desc="cross-fit", disable=not progress, unit="fit")
        with bar:
            for fold, (fit_rows, held_rows) in enumerate(splits):
                bar.set_postfix_str(f"fold {fold + 1}/{n_folds}")
                missing = np.setdiff1d(np.arange(n_classes), labels[fit_rows])
                if len(missing):
                    raise ModelError(
                        f"cross-fitting fold {fold + 1}: class(es) "
                        f"{self.classes_[missing].tolist()} have no training product; "
                        "lower model.fusion.cross_fit_folds"
                    )
                scores = self._fit_text(
                    [titles[i] for i in fit_rows],
                    [descriptions[i] for i in fit_rows],
                    labels[fit_rows],
                    (
                        [titles[i] for i in held_rows],
                        [descriptions[i] for i in held_rows],
                        labels[held_rows],
                    ),
                    progress=False,
                )
                for name, values in scores.items():
                    oof.setdefault(name, np.zeros((len(labels), n_classes)))[held_rows] = values
                fold_curves.append({k.removeprefix("text_nn/"): v for k, v in self.history.items()})
                self.history = {}
                bar.update()
            if fold_curves and fold_curves[0].get("val_loss"):
                self.history = {
                    f"text_nn/{key}": np.mean([c[key] for c in fold_curves], axis=0).tolist()
                    for key in fold_curves[0]
                }
            curves = dict(self.history)
            bar.set_postfix_str("refit on all rows")
            self.history = {}
            self._fit_text(titles, descriptions, labels, None, progress=False)
            if self.text_nn is not None:
                # Same epoch count as the folds, whose out-of-fold scores fit the temperature:
                # a refit stopped at the lowest mean fold loss (epoch 2 of 6 on the sample) is
                # less confident than those scores and came out badly calibrated (ECE 0.13).
                self.text_nn_epochs = self.text_nn.params.epochs
                curves["text_nn/refit_train_loss"] = self.history["text_nn/train_loss"]
            # The refit has no held-out rows: keep the fold curves, plus its training loss.
            self.history = curves
            bar.update()
        return oof

    def _fit_image(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        y_train: np.ndarray,
        y_val: np.ndarray,
        val_scores: dict[str, np.ndarray],
        val_masks: dict[str, np.ndarray],
        *,
        progress: bool,
    ) -> None:
        p = self.model_params.image
        cache_dir = Path(p.cache_dir) if p.cache_dir else None
        tick = time.perf_counter()
        train_images = load_images(
            train["image_path"].fillna("").tolist(),
            p.image_size,
            cache_dir,
            progress=progress,
            desc="train images",
        )
        val_images = load_images(
            val["image_path"].fillna("").tolist(),
            p.image_size,
            cache_dir,
            progress=progress,
            desc="val images",
        )
        self.timings["fit/image_decode"] = time.perf_counter() - tick
        train_rows = [i for i, image in enumerate(train_images) if image is not None]
        val_rows = [i for i, image in enumerate(val_images) if image is not None]
        if len(train_rows) < _MIN_TRAIN_IMAGES or not val_rows:
            logger.warning(
                "image branch skipped: %d usable training image(s), %d validation image(s)",
                len(train_rows),
                len(val_rows),
            )
            return
        tick = time.perf_counter()
        self.image = ImageClassifier(p, self.seed)
        train_stack = _stack_images(train_images, train_rows)
        val_stack = _stack_images(val_images, val_rows)
        curves = self.image.fit(
            train_stack,
            y_train[train_rows],
            len(self.classes_),
            val=(val_stack, y_val[val_rows]),
            progress=progress,
        )
        self.history.update({f"image/{key}": values for key, values in curves.items()})
        scores = np.full((len(val_images), len(self.classes_)), np.nan)
        scores[val_rows] = self.image.predict_log_proba(val_stack)
        mask = np.zeros(len(val_images), dtype=bool)
        mask[val_rows] = True
        val_scores["image"], val_masks["image"] = scores, mask
        self.timings["fit/image"] = time.perf_counter() - tick

    # ------------------------------------------------------------------ inference

    def _fusion_inputs(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calibrated log-probabilities: the text branches pooled, the image apart.

        Each branch is first temperature-scaled (so a weak branch is a flat distribution
        and cannot shout), then the text branches are averaged with the fixed weights of
        `model.fusion` (the validation split is too small to tell good weights apart: see
        bench/README.md), and the fusion learns one scale for the text, one for the image
        and the class biases.
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
        text = [name for name in _TEXT_BRANCHES if name in calibrated]
        total = sum(weights[name] for name in text)
        if total <= 0:
            raise ModelError(
                "model.fusion: the weights of the fitted text branches "
                f"({', '.join(f'{name}_weight' for name in text)}) must sum to a positive number"
            )
        inputs = {"text": sum((weights[name] / total) * calibrated[name] for name in text)}
        if "image" in calibrated:
            inputs["image"] = calibrated["image"]
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
        titles = _clean_column(frame, "designation", required=True)
        descriptions = _clean_column(frame, "description", required=False)
        scores: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        if self.sparse is not None:
            scores["sparse"] = self.sparse.decision_function(titles, descriptions)
        if self.text_nn is not None:
            scores["text_nn"] = self.text_nn.predict_log_proba(titles, descriptions)
        if self.transformer is not None:
            scores["transformer"] = self.transformer.predict_log_proba(titles, descriptions)
        if self.image is not None:
            images = self._decode_images(frame)
            rows = [i for i, image in enumerate(images) if image is not None]
            image_scores = np.full((len(frame), len(self.classes_)), np.nan)
            if rows:
                image_scores[rows] = self.image.predict_log_proba(_stack_images(images, rows))
            mask = np.zeros(len(frame), dtype=bool)
            mask[rows] = True
            scores["image"], masks["image"] = image_scores, mask
        return scores, masks

    def predict_branches(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-branch calibrated probabilities and the fused ones.

        Returns:
            `sparse`, `image` (NaN rows where no usable image; NaN everywhere when the
            branch is not part of the model), `text_nn` and `transformer` only when the
            model has these optional branches, `fused`: arrays (n, n_classes).
        """
        fusion = self._check_fitted()
        scores, masks = self._branch_scores(frame)
        result: dict[str, np.ndarray] = {}
        # The optional branches are reported only when fitted: a column of NaN in every
        # default evaluation would only add a meaningless `<branch>_coverage` metric.
        names = ["sparse", *(name for name in ("text_nn", "transformer") if name in scores)]
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
                np.zeros((0, len(self.classes_))), self.classes_, np.zeros(0, dtype=bool)
            )
        scores, masks = self._branch_scores(frame)
        probs = np.exp(fusion.predict_log_proba(self._fusion_inputs(scores), masks))
        has_image = masks.get("image", np.zeros(len(frame), dtype=bool))
        return top_predictions(probs, self.classes_, has_image)

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
        if self.image is not None:
            torch.save(self.image.state(), directory / IMAGE_FILE)

    @classmethod
    def load(cls, directory: Path) -> ProductClassifier:
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


def _dedup_groups(frame: pd.DataFrame) -> np.ndarray:
    """Group id per row: rows with the same normalised title + description share one."""
    descriptions = (
        frame["description"].fillna("").astype(str)
        if "description" in frame.columns
        else pd.Series([""] * len(frame), index=frame.index)
    )
    keys = [
        normalize_for_dedup(str(title), text)
        for title, text in zip(frame["designation"].tolist(), descriptions.tolist(), strict=True)
    ]
    return pd.factorize(pd.Series(keys))[0]


def _stack_images(images: Sequence[np.ndarray | None], rows: Sequence[int]) -> np.ndarray:
    """The decoded images of `rows` as one (n, H, W, 3) array."""
    selected = [images[i] for i in rows]
    return np.stack([image for image in selected if image is not None])


def category_name(code: int) -> str:
    """Human-readable name of a product type code (the code itself when unknown)."""
    return CATEGORY_NAMES.get(int(code), str(code))


def empty_output(index: pd.Index) -> pd.DataFrame:
    """The prediction output contract with no row (typed columns, given index)."""
    dtypes = {
        "prdtypecode": "int64",
        "category": "object",
        "confidence": "float64",
        "top_1_code": "int64",
        "top_1_proba": "float64",
        "top_2_code": "int64",
        "top_2_proba": "float64",
        "top_3_code": "int64",
        "top_3_proba": "float64",
        "has_image": "bool",
    }
    return pd.DataFrame(
        {name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()}, index=index
    )


@dataclass(frozen=True)
class TopPredictions:
    """The top-3 of each row: `codes` (n, 3) int64 (-1 when the model knows fewer classes),
    `probs` (n, 3) float64 (0 for those), `has_image` (n,) bool (the image was used)."""

    codes: np.ndarray
    probs: np.ndarray
    has_image: np.ndarray


def top_predictions(
    probs: np.ndarray, classes: np.ndarray, has_image: np.ndarray
) -> TopPredictions:
    """The top-3 codes and probabilities of fused probabilities (n, n_classes)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    rows = np.arange(len(probs))[:, None]
    top = order[:, :3]
    top_probs = probs[rows, top].astype(np.float64)
    top_codes = classes[top].astype(np.int64)
    if top.shape[1] < 3:
        pad = 3 - top.shape[1]
        top_codes = np.pad(top_codes, ((0, 0), (0, pad)), constant_values=-1)
        top_probs = np.pad(top_probs, ((0, 0), (0, pad)), constant_values=0.0)
    return TopPredictions(top_codes, top_probs, np.asarray(has_image, dtype=bool))


def build_output(top: TopPredictions, index: pd.Index | Sequence[Any]) -> pd.DataFrame:
    """The prediction output contract of `top`.

    Columns: prdtypecode, category, confidence (= top-1 probability), top_k_code /
    top_k_proba for k = 1..3 (code -1 and probability 0 when fewer classes), has_image.
    """
    columns: dict[str, Any] = {
        "prdtypecode": top.codes[:, 0],
        "category": [category_name(code) for code in top.codes[:, 0]],
        "confidence": top.probs[:, 0],
    }
    for k in range(3):
        columns[f"top_{k + 1}_code"] = top.codes[:, k]
        columns[f"top_{k + 1}_proba"] = top.probs[:, k]
    columns["has_image"] = top.has_image
    return pd.DataFrame(columns, index=index if isinstance(index, pd.Index) else pd.Index(index))


__all__ = [
    "OUTPUT_COLUMNS",
    "ProductClassifier",
    "TopPredictions",
    "build_output",
    "category_name",
    "empty_output",
    "top_predictions",
]
