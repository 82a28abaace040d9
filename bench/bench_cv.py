"""Repeated stratified cross-validation of the classifier, its branches and the reference.

One 1,412-row test slice cannot see a 1-point difference (its noise is about +-1.1 point).
This benchmark scores every variant on the same K folds of the whole labelled sample
(stratified by class, grouped by normalised text so a duplicate never scores itself),
R times with other shuffles, and reports weighted F1 on the `full` rows (text_origin.csv)
as mean +- standard deviation over the K x R folds, plus the paired differences with the
previous default and with the default of `--params` (same folds: much less noisy than
either score).

Inside each fold the training part is split like the product splits its data (val =
15 / 80 of it, `prepare.assign_splits`, grouped by text), and:

* the reference (TF-IDF word 1-2-grams + LinearSVC) trains on the whole training part;
* the previous default trains as it was: a sparse branch of one LinearSVC + neural text +
  image, on train only, fused on val (`fusion.refit: false`);
* every branch of `--params` trains on train, the neural text branch included even when
  the default leaves it out, the temperatures and fusions are fit on val: each branch
  alone, and the branch sets, whose fusions are fit on the same val scores (no extra
  training), with `--sparse-weights` more sparse + text_nn weightings;
* `ProductClassifier.refit` then retrains every branch on train + val, keeping the fusion;
  the branch sets are scored again with the refit branches. The default of `--params` is
  its branch set (`enabled` flags) refit, predicted by `ProductClassifier` itself with the
  other branches removed, exactly what `fit` with those params gives.

So each fold trains each branch twice (holdout, refit), the previous default and the
reference once; images are decoded once for all folds (the image cache).

    nice .venv/bin/python bench/bench_cv.py --source ../shared/data/rakuten-sample \
        [--folds 5] [--repeats 1] [--params params.yaml] [--max-rows N] \
        [--sparse-weights 0.6,0.75]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from rakuten_mlops.data.ingest import import_dataset
from rakuten_mlops.data.prepare import assign_splits, load_split, prepare_dataset
from rakuten_mlops.evaluation.metrics import compute_calibration, compute_classification_metrics
from rakuten_mlops.features.text import normalize_for_dedup
from rakuten_mlops.models.classifier import clean_column, stack_images
from rakuten_mlops.models.fusion import LogLinearFusion
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.params import load_params, parse_model_params

BENCH_DIR = Path(__file__).resolve().parent
SPLITS = ("train", "val", "test", "unseen")
# Branch sets fused on val (the image joins a set only where a product has an image).
# A set of one text branch differs from that branch alone by the fusion's class biases.
BRANCH_SETS: dict[str, tuple[str, ...]] = {
    "sparse (fused)": ("sparse",),
    "sparse + image": ("sparse", "image"),
    "text_nn + image": ("text_nn", "image"),
    "sparse + text_nn (no image)": ("sparse", "text_nn"),
    "sparse + text_nn + image": ("sparse", "text_nn", "image"),
    # With --word-vectors (or when the params enable the branch).
    "sparse + word_vectors (no image)": ("sparse", "word_vectors"),
    "sparse + word_vectors + image": ("sparse", "word_vectors", "image"),
}
# The paired differences are taken against these two rows.
PREVIOUS = "PREVIOUS DEFAULT (holdout)"
DEFAULT = "DEFAULT (refit)"

sys.path.insert(0, str(BENCH_DIR))
from bench_classifier import train_reference  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_sample(source: Path, work: Path, data_params: dict[str, Any]) -> pd.DataFrame:
    """Every labelled product of `source`, cleaned by the project's import + prepare."""
    raw, processed = work / "raw", work / "processed"
    import_dataset(source, raw)
    prepare_dataset(raw, processed, data_params)
    frames = [load_split(processed, split) for split in SPLITS]
    return pd.concat([f for f in frames if len(f)]).sort_index()


def cv_sample(
    source: Path, work_dir: Path, data_params: dict[str, Any], seed: int, max_rows: int = 0
) -> tuple[pd.DataFrame, pd.Series, np.ndarray, float]:
    """The labelled sample of a cross-validation, its text keys and groups (duplicates
    share one), and the inner val fraction (the product's: `val_size` of train + val)."""
    val_fraction = float(data_params.get("val_size", 0.15)) / (
        1.0 - float(data_params.get("test_size", 0.15)) - float(data_params.get("unseen_size", 0))
    )
    frame = load_sample(source, work_dir, data_params)
    if max_rows:
        frame = frame.sample(n=min(max_rows, len(frame)), random_state=seed).sort_index()
    keys = text_keys(frame)
    return frame, keys, pd.factorize(keys)[0], val_fraction


def cv_parser(description: str) -> argparse.ArgumentParser:
    """The options every cross-validated bench shares: sample, params, folds, size, work dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", type=Path, required=True, help="official-layout sample")
    parser.add_argument("--params", type=Path, default=BENCH_DIR.parent / "params.yaml")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=0, help="subsample (smoke runs)")
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "rakuten-bench-cv"
    )
    return parser


def inner_split(
    frame: pd.DataFrame, keys: pd.Series, fit_rows: np.ndarray, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of a fold's training part: train and val, split as the product splits its data."""
    fit_part = frame.iloc[fit_rows]
    inner = assign_splits(keys.iloc[fit_rows], fit_part["prdtypecode"], {"val": val_fraction}, seed)
    return inner.eq("train").to_numpy(), inner.eq("val").to_numpy()


def text_keys(frame: pd.DataFrame) -> pd.Series:
    """Normalised title + description per row: duplicates share a key."""
    return pd.Series(
        [
            normalize_for_dedup(str(t), str(d))
            for t, d in zip(frame["designation"], frame["description"], strict=True)
        ],
        index=frame.index,
    )


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray, full: np.ndarray) -> dict[str, float]:
    """Weighted F1 on the `full` rows and on all rows."""
    return {
        "wf1_full": compute_classification_metrics(y_true[full], y_pred[full])["weighted_f1"],
        "wf1_all": compute_classification_metrics(y_true, y_pred)["weighted_f1"],
    }


def timed_branch_scores(
    clf: ProductClassifier, frame: pd.DataFrame
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Raw scores per branch (as `ProductClassifier._branch_scores`), with each one's time."""
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    titles = clean_column(frame, "designation", required=True)
    descriptions = clean_column(frame, "description", required=False)
    seconds["cleaning"] = time.perf_counter() - tick
    scores: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if clf.sparse is not None:
        tick = time.perf_counter()
        scores["sparse"] = clf.sparse.decision_function(titles, descriptions)
        seconds["sparse"] = time.perf_counter() - tick
    if clf.text_nn is not None:
        tick = time.perf_counter()
        scores["text_nn"] = clf.text_nn.predict_log_proba(titles, descriptions)
        seconds["text_nn"] = time.perf_counter() - tick
    if clf.word_vectors is not None:
        tick = time.perf_counter()
        scores["word_vectors"] = clf.word_vectors.predict_log_proba(titles, descriptions)
        seconds["word_vectors"] = time.perf_counter() - tick
    if clf.image is not None:
        tick = time.perf_counter()
        images = clf._decode_images(frame)
        rows = [i for i, image in enumerate(images) if image is not None]
        image_scores = np.full((len(frame), len(clf.classes_)), np.nan)
        if rows:
            image_scores[rows] = clf.image.predict_log_proba(stack_images(images, rows))
        masks["image"] = np.zeros(len(frame), dtype=bool)
        masks["image"][rows] = True
        scores["image"] = image_scores
        seconds["image"] = time.perf_counter() - tick
    return scores, masks, seconds


def fit_branch_set(
    clf: ProductClassifier,
    names: tuple[str, ...],
    val_scores: dict[str, np.ndarray],
    val_masks: dict[str, np.ndarray],
    y_val: np.ndarray,
) -> LogLinearFusion:
    """The product's fusion (same temperatures, weights, bias penalty) over `names` only."""
    fusion_params = clf.model_params.fusion
    inputs = clf._fusion_inputs({name: val_scores[name] for name in names})
    masks = {name: mask for name, mask in val_masks.items() if name in names}
    fusion = LogLinearFusion(list(inputs), fusion_params.bias_l2, fusion_params.max_iter)
    return fusion.fit(inputs, y_val, masks)


def predict_branch_set(
    clf: ProductClassifier,
    fusion: LogLinearFusion,
    names: tuple[str, ...],
    scores: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
) -> np.ndarray:
    """Fused probabilities of a branch set."""
    inputs = clf._fusion_inputs({name: scores[name] for name in names})
    kept = {name: mask for name, mask in masks.items() if name in names}
    return np.exp(fusion.predict_log_proba(inputs, kept))


def default_branch_set(model_params: dict[str, Any]) -> tuple[str, ...]:
    """The branches that `fit` trains with these params (`enabled` flags)."""
    parsed = parse_model_params(model_params)
    flags = {
        "sparse": parsed.sparse.enabled,
        "text_nn": parsed.text_nn.enabled,
        "word_vectors": parsed.word_vectors.enabled,
        "image": parsed.image.enabled,
    }
    return tuple(name for name, enabled in flags.items() if enabled)


def all_branches_params(
    model_params: dict[str, Any], *, word_vectors: bool = False
) -> dict[str, Any]:
    """`model_params` with every branch on (the image unless `--no-image` disabled it; the
    word vectors with `--word-vectors` or when the params enable them), trained on train
    first (the refit comes after)."""
    params = {
        **model_params,
        "sparse": {**(model_params.get("sparse") or {}), "enabled": True},
        "text_nn": {**(model_params.get("text_nn") or {}), "enabled": True},
        "fusion": {**(model_params.get("fusion") or {}), "refit": False},
    }
    if word_vectors:
        params["word_vectors"] = {**(model_params.get("word_vectors") or {}), "enabled": True}
    return params


def previous_default_params(model_params: dict[str, Any]) -> dict[str, Any]:
    """The previous default: every branch, the sparse one a single LinearSVC (no NB-SVM, no
    second view), trained on train only; the other hyperparameters as `model_params`."""
    params = all_branches_params(model_params)
    params["sparse"] = {**params["sparse"], "nb_svm": False, "second_view": False}
    params["word_vectors"] = {**(params.get("word_vectors") or {}), "enabled": False}
    return params


def with_text_weights(clf: ProductClassifier, sparse_weight: float) -> ProductClassifier:
    """A shallow copy of `clf` whose fusion averages sparse and text_nn with these weights."""
    model = copy.copy(clf)
    fusion = dataclasses.replace(
        clf.model_params.fusion, sparse_weight=sparse_weight, text_nn_weight=1.0 - sparse_weight
    )
    model.model_params = dataclasses.replace(clf.model_params, fusion=fusion)
    return model


def without_branches(
    clf: ProductClassifier, names: tuple[str, ...], fusion: LogLinearFusion
) -> ProductClassifier:
    """A shallow copy of `clf` that has only the branches `names`, fused by `fusion`."""
    model = copy.copy(clf)
    for name in ("sparse", "text_nn", "word_vectors", "image"):
        if name not in names:
            setattr(model, name, None)
    model.temperatures = {k: v for k, v in clf.temperatures.items() if k in names}
    model.fusion = fusion
    return model


def text_only_throughput(model: ProductClassifier, test: pd.DataFrame) -> float:
    """Products per second of one text-only batch prediction of `test` (after a warm-up)."""
    text_only = test.assign(image_path="")
    model.predict(text_only.head(50))
    tick = time.perf_counter()
    model.predict(text_only)
    return len(test) / (time.perf_counter() - tick)


def run_fold(
    frame: pd.DataFrame,
    keys: pd.Series,
    fit_rows: np.ndarray,
    test_rows: np.ndarray,
    model_params: dict[str, Any],
    seed: int,
    val_fraction: float,
    *,
    progress: bool,
    throughput: bool,
    sparse_weights: tuple[float, ...] = (),
    word_vectors: bool = False,
) -> dict[str, Any]:
    """Every variant trained on `fit_rows` and scored on `test_rows`.

    `model_params` is the product's `model:` section: its branch set is the default.
    """
    fit_part, test = frame.iloc[fit_rows], frame.iloc[test_rows]
    is_train, is_val = inner_split(frame, keys, fit_rows, seed, val_fraction)
    train, val = fit_part[is_train], fit_part[is_val]
    y_test = test["prdtypecode"].to_numpy(dtype=np.int64)
    full = (test["text_origin"] == "full").to_numpy()
    out: dict[str, Any] = {
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "n_test_full": int(full.sum()),
        "scores": {},
        "fit_s": {},
        "predict_s": {},
    }
    scores = out["scores"]

    predicted, seconds = train_reference(fit_part, test)
    scores["reference"] = f1_scores(y_test, predicted, full)
    out["fit_s"]["reference"] = seconds

    default_names = default_branch_set(model_params)
    out["default_branches"] = list(default_names)
    # The previous default is a product of its own (its sparse branch is one LinearSVC).
    previous = ProductClassifier(previous_default_params(model_params), seed=seed)
    previous.fit(train, val, progress=progress)
    probs = previous.predict_proba(test)
    pred = previous.classes_[probs.argmax(axis=1)]
    scores[PREVIOUS] = f1_scores(y_test, pred, full)
    scores[PREVIOUS]["ece"] = compute_calibration(probs.max(axis=1), pred == y_test).ece
    previous_scores, _, _ = timed_branch_scores(previous, test)
    pred = previous.classes_[previous_scores["sparse"].argmax(axis=1)]
    scores["sparse, one LinearSVC (previous), holdout"] = f1_scores(y_test, pred, full)
    out["fit_s"].update({f"previous {k}": v for k, v in previous.timings.items()})
    if throughput:
        out["text_only_products_per_s"] = {"holdout": text_only_throughput(previous, test)}
    del previous

    clf = ProductClassifier(all_branches_params(model_params, word_vectors=word_vectors), seed=seed)
    clf.fit(train, val, progress=progress)
    classes = clf.classes_
    y_val = np.searchsorted(classes, val["prdtypecode"].to_numpy(dtype=np.int64))
    val_scores, val_masks, _ = timed_branch_scores(clf, val)
    # Every fused row: its label, the classifier whose fusion inputs it uses, its branches.
    variants: list[tuple[str, ProductClassifier, tuple[str, ...]]] = [
        (label, clf, names)
        for label, names in BRANCH_SETS.items()
        if all(name in val_scores for name in names)
    ]
    if "text_nn" in val_scores:
        variants += [
            (
                f"sparse {weight:g} + text_nn {1 - weight:g}",
                with_text_weights(clf, weight),
                ("sparse", "text_nn"),
            )
            for weight in sparse_weights
        ]
    fusions = [
        (label, model, names, fit_branch_set(model, names, val_scores, val_masks, y_val))
        for label, model, names in variants
    ]
    default_names = tuple(name for name in default_names if name in val_scores)
    default_fusion = fit_branch_set(clf, default_names, val_scores, val_masks, y_val)

    for stage in ("holdout", "refit"):
        if stage == "refit":
            clf.refit(train, val, progress=progress)
        test_scores, test_masks, predict_s = timed_branch_scores(clf, test)
        out["predict_s"][stage] = {k: v / len(test) * 1000 for k, v in predict_s.items()}
        for name in ("sparse", "text_nn", "word_vectors"):
            if name in test_scores:
                pred = classes[test_scores[name].argmax(axis=1)]
                scores[f"{name} alone, {stage}"] = f1_scores(y_test, pred, full)
        if "image" in test_scores:
            rows = test_masks["image"]
            pred = classes[np.nan_to_num(test_scores["image"][rows]).argmax(axis=1)]
            scores[f"image alone (rows with image), {stage}"] = {
                **f1_scores(y_test[rows], pred, full[rows]),
                "n": int(rows.sum()),
            }
        for label, model, names, fusion in fusions:
            probs = predict_branch_set(model, fusion, names, test_scores, test_masks)
            pred = classes[probs.argmax(axis=1)]
            scores[f"{label}, {stage}"] = f1_scores(y_test, pred, full)
        if stage == "holdout":
            continue
        # The product itself: `clf` refit, less the branches its params leave out.
        product = without_branches(clf, default_names, default_fusion)
        tick = time.perf_counter()
        probs = product.predict_proba(test)
        product_s = time.perf_counter() - tick
        pred = classes[probs.argmax(axis=1)]
        scores[DEFAULT] = f1_scores(y_test, pred, full)
        scores[DEFAULT]["ece"] = compute_calibration(probs.max(axis=1), pred == y_test).ece
        out["predict_s"][stage]["product_with_images"] = product_s / len(test) * 1000
        if throughput:
            out["text_only_products_per_s"]["refit"] = text_only_throughput(product, test)
    out["fit_s"].update(clf.timings)
    # What the default costs to train: its branches, twice (holdout + refit), and the fusion.
    out["fit_s"]["default (total)"] = sum(
        clf.timings.get(f"{stage}/{name}", 0.0)
        for stage in ("fit", "refit")
        for name in (*default_names, "image_decode")
    ) + clf.timings.get("fit/fusion", 0.0)
    return out


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(folds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over folds, and the paired differences on full rows with
    the previous default (`diff_full_*`) and with the default (`diff_default_full_*`)."""
    previous = np.array([f["scores"][PREVIOUS]["wf1_full"] for f in folds])
    default = np.array([f["scores"][DEFAULT]["wf1_full"] for f in folds])
    table: dict[str, dict[str, float]] = {}
    for name in folds[0]["scores"]:
        full = np.array([f["scores"][name]["wf1_full"] for f in folds])
        every = np.array([f["scores"][name]["wf1_all"] for f in folds])
        table[name] = {
            "wf1_full_mean": float(full.mean()),
            "wf1_full_std": _std(full),
            "wf1_all_mean": float(every.mean()),
            "wf1_all_std": _std(every),
            "diff_full_mean": float((full - previous).mean()),
            "diff_full_std": _std(full - previous),
            "diff_default_full_mean": float((full - default).mean()),
            "diff_default_full_std": _std(full - default),
        }
    return table


def print_table(table: dict[str, dict[str, float]], folds: list[dict[str, Any]]) -> None:
    """The cross-validated scores and the costs, side by side."""
    n = len(folds)
    branches = " + ".join(folds[0].get("default_branches", []))
    print(
        f"\nweighted F1 over {n} folds (mean +- std); paired differences on full rows, in "
        f"points, vs the previous default (sparse + text_nn, holdout) and vs the default "
        f"({branches}, refit)"
    )
    print(
        f"{'model':<44} {'wF1 full rows':>16} {'wF1 all rows':>16} {'vs previous':>16} "
        f"{'vs default':>16}"
    )
    for name, row in table.items():
        print(
            f"{name:<44} {row['wf1_full_mean']:>8.4f} +-{row['wf1_full_std']:.4f} "
            f"{row['wf1_all_mean']:>8.4f} +-{row['wf1_all_std']:.4f} "
            f"{100 * row['diff_full_mean']:>+8.2f} +-{100 * row['diff_full_std']:.2f} "
            f"{100 * row['diff_default_full_mean']:>+8.2f} +-{100 * row['diff_default_full_std']:.2f}"
        )
    fit_keys = sorted({k for f in folds for k in f["fit_s"]})
    print("\ntraining time per fold, mean seconds (fit/* on train, refit/* on train + val):")
    for key in fit_keys:
        values = [f["fit_s"][key] for f in folds if key in f["fit_s"]]
        print(f"  {key:<24} {np.mean(values):8.1f}")
    print("\nprediction time, ms per product (mean over folds):")
    for stage in ("holdout", "refit"):
        keys = sorted({k for f in folds for k in f["predict_s"][stage]})
        cells = ", ".join(
            f"{k} {np.mean([f['predict_s'][stage][k] for f in folds]):.3f}" for k in keys
        )
        print(f"  {stage}: {cells}")
    speeds = [f["text_only_products_per_s"] for f in folds if "text_only_products_per_s" in f]
    if speeds and isinstance(speeds[0], dict):
        print(
            "text-only batch prediction: "
            f"previous default {np.mean([s['holdout'] for s in speeds]):,.0f} products/s, "
            f"default {np.mean([s['refit'] for s in speeds]):,.0f} products/s"
        )
    print(f"peak RSS {peak_rss_mb():,.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = cv_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--no-image",
        action="store_true",
        help="leave the image CNN out of every variant (about half the training time)",
    )
    parser.add_argument(
        "--only-folds",
        default="",
        help="comma-separated fold numbers (0-based, over repeats) to run in this process; "
        "run several processes and merge their JSON files with --merge",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--sparse-weights",
        type=lambda text: tuple(float(x) for x in text.split(",") if x.strip()),
        default=(),
        help="comma-separated `fusion.sparse_weight` values (text_nn gets the rest): one more "
        "sparse + text_nn row each, fused on the same val scores (no extra training)",
    )
    parser.add_argument(
        "--word-vectors",
        action="store_true",
        help="also train the French word vector branch (model.word_vectors; needs the "
        "`vectors` extra): its rows alone and fused with sparse (+ image)",
    )
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=None, help="print the table of these JSON files"
    )
    args = parser.parse_args(argv)
    if args.merge:
        merged = [
            fold
            for path in args.merge
            for fold in json.loads(path.read_text(encoding="utf-8"))["folds"]
        ]
        merged.sort(key=lambda f: (f["repeat"], f["fold"]))
        print_table(summarize(merged), merged)
        return 0

    params = load_params(args.params)
    seed = int(params.get("seed", 42))
    data_params = dict(params.get("data") or {})
    model_params = dict(params.get("model") or {})
    model_params["image"] = {
        **(model_params.get("image") or {}),
        "cache_dir": str(args.work_dir / "image_cache"),
    }
    if args.no_image:
        model_params["image"]["enabled"] = False
    frame, keys, groups, val_fraction = cv_sample(
        args.source, args.work_dir, data_params, seed, args.max_rows
    )
    labels = frame["prdtypecode"].to_numpy()
    print(
        f"{len(frame):,} labelled products ({int((frame.text_origin == 'full').sum()):,} full "
        f"rows, {int(frame.has_image.sum())} with an image); {args.folds} folds x "
        f"{args.repeats} repeat(s); inner val fraction {val_fraction:.4f}",
        flush=True,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    selected = {int(i) for i in args.only_folds.split(",") if i.strip()}
    out_path = args.out or BENCH_DIR / "results" / f"cv_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    folds: list[dict[str, Any]] = []
    started = time.perf_counter()
    for repeat in range(args.repeats):
        splitter = StratifiedGroupKFold(args.folds, shuffle=True, random_state=seed + repeat)
        for fold, (fit_rows, test_rows) in enumerate(splitter.split(frame, labels, groups)):
            if selected and repeat * args.folds + fold not in selected:
                continue
            tick = time.perf_counter()
            result = run_fold(
                frame,
                keys,
                fit_rows,
                test_rows,
                model_params,
                seed,
                val_fraction,
                progress=not args.no_progress,
                throughput=fold == 0 and repeat == 0,
                sparse_weights=args.sparse_weights,
                word_vectors=args.word_vectors,
            )
            result.update(repeat=repeat, fold=fold, seconds=time.perf_counter() - tick)
            folds.append(result)
            s = result["scores"]
            print(
                f"repeat {repeat} fold {fold}: {result['seconds']:.0f}s | reference "
                f"{s['reference']['wf1_full']:.4f} | previous {s[PREVIOUS]['wf1_full']:.4f}"
                f" | default {s[DEFAULT]['wf1_full']:.4f} (full rows)",
                flush=True,
            )
            out_path.write_text(
                json.dumps(
                    {
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "params": params,
                        "machine": {
                            "python": platform.python_version(),
                            "cpu": platform.processor(),
                        },
                        "folds": folds,
                        "summary": summarize(folds),
                        "elapsed_s": time.perf_counter() - started,
                    },
                    indent=2,
                    default=str,
                ),
                encoding="utf-8",
            )
    print_table(summarize(folds), folds)
    print(f"total {time.perf_counter() - started:.0f}s; results: {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
