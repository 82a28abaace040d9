"""`ProductClassifier`: the classifier and how it is fitted (fit, refit, cross-fit).

`fit` fits the fusion (and each branch's temperature) on scores of products the branches
never saw, so the fused probabilities are calibrated: either the validation split
(holdout), or, with `model.fusion.cross_fit_folds` >= 2, out-of-fold scores of the text
branches over train + val, which are then refit on all of train + val. What a fitted model
does at inference, and its `save`/`load`, are `models/classifier.py` (`Classifier`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.features.image_tensors import load_images
from rakuten_mlops.features.text import normalize_for_dedup
from rakuten_mlops.models.classifier import Classifier, clean_column, stack_images
from rakuten_mlops.models.fusion import LogLinearFusion, fit_temperature
from rakuten_mlops.models.image import ImageClassifier
from rakuten_mlops.models.review import fit_review_rule
from rakuten_mlops.models.sparse import SparseTextModel
from rakuten_mlops.models.text_nn import NeuralTextClassifier
from rakuten_mlops.models.transformer import TransformerTextClassifier, check_transformer_setup
from rakuten_mlops.models.word_vectors import WordVectorModel, load_vectors
from rakuten_mlops.schema import TARGET_COL

logger = logging.getLogger(__name__)

_TRAINING_COLUMNS = ("designation", "description", "image_path", TARGET_COL)
# The image branch is skipped when training has fewer images than this.
_MIN_TRAIN_IMAGES = 10


class ProductClassifier(Classifier):
    """A `Classifier` that can be fitted: `fit` on train + val, `refit` on their union."""

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
        if p.word_vectors.enabled:
            load_vectors(p.word_vectors.spacy_model)  # fail before hours of training
        started = time.perf_counter()
        self.history, self.timings, self.temperatures = {}, {}, {}
        self.review_rule = None
        self.sparse = self.text_nn = self.transformer = self.word_vectors = self.image = None
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

        train_titles = clean_column(train, "designation", required=True)
        train_descriptions = clean_column(train, "description", required=False)
        val_titles = clean_column(val, "designation", required=True)
        val_descriptions = clean_column(val, "description", required=False)

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
        # When a prediction can be trusted, learnt from the same held-out products.
        held_out_probs = np.exp(self.fusion.predict_log_proba(fusion_inputs, val_masks))
        top = held_out_probs.argmax(axis=1)
        self.review_rule = fit_review_rule(
            held_out_probs.max(axis=1),
            self.classes_[top],
            top == fusion_labels,
            self.target_precision,
            seed=self.seed,
        )
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
                clean_column(pool, "designation", required=True),
                clean_column(pool, "description", required=False),
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
                stack_images(images, rows), labels[rows], len(self.classes_), progress=progress
            )
            self.image = image
            curves["image/refit_train_loss"] = refit_curves["train_loss"]
            self.timings["refit/image"] = time.perf_counter() - tick
            self.refit_branches.append("image")
        self.history = curves

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
        if p.word_vectors.enabled:
            tick = time.perf_counter()
            self.word_vectors = WordVectorModel(p.word_vectors, self.seed).fit(
                titles, descriptions, labels, len(self.classes_)
            )
            if held_out is not None:
                scores["word_vectors"] = self.word_vectors.predict_log_proba(
                    held_out[0], held_out[1]
                )
            self._add_timing(f"{timing_prefix}/word_vectors", time.perf_counter() - tick)
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
        train_stack = stack_images(train_images, train_rows)
        val_stack = stack_images(val_images, val_rows)
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
