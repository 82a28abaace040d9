"""Benchmark the product classifier: quality per branch, training cost, prediction speed.

Runs the real pipeline on a labelled source in the official layout: `import_dataset` into
a raw dir, `prepare_dataset` into a processed dir (split of `params.yaml`), then trains
`ProductClassifier` with the `model:` params and the common reference (TF-IDF word 1-2-grams
+ LinearSVC on designation + description) on the same training split, and scores both on
the test split. Prints a table and writes everything to `bench/results/*.json`.

    python bench/bench_classifier.py --source ../shared/data/rakuten-sample
"""

from __future__ import annotations

import argparse
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
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from rakuten_mlops.data.ingest import import_dataset
from rakuten_mlops.data.prepare import load_split, prepare_dataset
from rakuten_mlops.evaluation.metrics import compute_calibration, compute_classification_metrics
from rakuten_mlops.features.image_tensors import decode_image
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.params import load_params

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Size of the full challenge training set, for the cost estimate.
FULL_DATASET_PRODUCTS = 84_916


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score(y_true: np.ndarray, y_pred: np.ndarray, full: np.ndarray) -> dict[str, float]:
    """Weighted F1 on `full` rows and on all rows, macro F1, accuracy."""
    metrics = compute_classification_metrics(y_true, y_pred)
    return {
        "weighted_f1_full": compute_classification_metrics(y_true[full], y_pred[full])[
            "weighted_f1"
        ],
        "weighted_f1": metrics["weighted_f1"],
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "n": metrics["n"],
        "n_full": float(full.sum()),
    }


def score_probabilities(
    probs: np.ndarray, classes: np.ndarray, y_true: np.ndarray, full: np.ndarray
) -> dict[str, float]:
    """`score` of the arg-max, plus the ECE of the top-1 confidence."""
    predicted = classes[probs.argmax(axis=1)]
    result = score(y_true, predicted, full)
    result["ece"] = compute_calibration(probs.max(axis=1), predicted == y_true).ece
    return result


def train_reference(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The common reference: TF-IDF word 1-2-grams + LinearSVC on title + description."""
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    features = vectorizer.fit_transform(train["designation"] + " " + train["description"])
    model = LinearSVC().fit(features, train["prdtypecode"])
    predicted = model.predict(vectorizer.transform(test["designation"] + " " + test["description"]))
    return np.asarray(predicted), time.perf_counter() - started


def text_fused_probabilities(classifier: ProductClassifier, frame: pd.DataFrame) -> np.ndarray:
    """Fused prediction of the text branches only (the same products, images withheld)."""
    return classifier.predict_proba(frame.drop(columns=["image_path"]))


def measure_throughput(
    classifier: ProductClassifier, frame: pd.DataFrame, min_rows: int
) -> dict[str, float]:
    """Products per second of `predict` on one batch (repeated up to `min_rows` rows)."""
    repeats = max(1, -(-min_rows // max(1, len(frame))))
    batch = pd.concat([frame] * repeats, ignore_index=True)
    classifier.predict(batch.head(50))  # warm-up: lazy imports, allocator
    started = time.perf_counter()
    classifier.predict(batch)
    seconds = time.perf_counter() - started
    return {"rows": float(len(batch)), "seconds": seconds, "products_per_s": len(batch) / seconds}


def estimate_full_dataset(
    timings: dict[str, float],
    n_train: int,
    decode_s_per_image: float,
    n_train_images: int,
    train_fraction: float,
    decoded_fraction: float,
) -> dict[str, float]:
    """Training time on the full dataset, assuming each branch scales linearly with its rows.

    Text branches scale with the training products, the image branch with the training
    images: every product of the full dataset has one, against a few hundred here. A branch
    trained again on train + val (`fusion.refit`, timings `refit/*`) counts twice.
    """
    full_train = FULL_DATASET_PRODUCTS * train_fraction
    text_factor = full_train / n_train
    image_factor = full_train / max(1, n_train_images)
    stages = ("fit", "refit")
    text_s = (
        sum(
            timings.get(f"{stage}/{name}", 0.0)
            for stage in stages
            for name in ("sparse", "text_nn", "transformer")
        )
        * text_factor
    )
    image_s = sum(timings.get(f"{stage}/image", 0.0) for stage in stages) * image_factor
    # Train and val images are decoded once, then read from the cache.
    decode_s = decode_s_per_image * FULL_DATASET_PRODUCTS * decoded_fraction
    return {
        "full_train_products": full_train,
        "text_scale_factor": text_factor,
        "image_scale_factor": image_factor,
        "text_branches_s": text_s,
        "image_branch_s": image_s,
        "image_decode_first_run_s": decode_s,
        "total_s": text_s + image_s + decode_s + timings.get("fit/fusion", 0.0) * text_factor,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    params = load_params(args.params)
    work = Path(args.work_dir)
    raw, processed = work / "raw", work / "processed"
    model_params = dict(params.get("model") or {})
    # Keep the bench's image cache with the bench data, out of the project's data/ dir.
    model_params["image"] = {
        "cache_dir": str(work / "image_cache"),
        **(model_params.get("image") or {}),
    }
    if args.image_cache:
        model_params["image"]["cache_dir"] = args.image_cache

    tick = time.perf_counter()
    import_dataset(Path(args.source), raw)
    prepare_dataset(raw, processed, dict(params.get("data") or {}))
    train, val, test = (load_split(processed, split) for split in ("train", "val", "test"))
    prepare_s = time.perf_counter() - tick
    print(
        f"data: train {len(train):,}, val {len(val):,}, test {len(test):,} "
        f"(images {int(train.has_image.sum())}/{int(val.has_image.sum())}/{int(test.has_image.sum())}), "
        f"prepared in {prepare_s:.1f}s",
        flush=True,
    )

    y_test = test["prdtypecode"].to_numpy(dtype=np.int64)
    full = (test["text_origin"] == "full").to_numpy()
    with_image = test["has_image"].to_numpy(dtype=bool)

    reference_pred, reference_s = train_reference(train, test)
    results: dict[str, Any] = {
        "reference": {**score(y_test, reference_pred, full), "fit_s": reference_s}
    }
    print(f"reference trained in {reference_s:.1f}s", flush=True)

    rss_before = peak_rss_mb()
    tick = time.perf_counter()
    classifier = ProductClassifier(model_params, seed=int(params.get("seed", 42)))
    classifier.fit(train, val, progress=not args.no_progress)
    fit_s = time.perf_counter() - tick
    rss_after = peak_rss_mb()

    tick = time.perf_counter()
    branches = classifier.predict_branches(test)
    results["predict_test_s"] = time.perf_counter() - tick
    classes = classifier.classes_
    # `transformer` is only there when the optional branch is enabled.
    for name in ("sparse", "text_nn", "transformer"):
        if name in branches and not np.isnan(branches[name]).all():
            results[name] = score_probabilities(branches[name], classes, y_test, full)
    results["text_fused"] = score_probabilities(
        text_fused_probabilities(classifier, test), classes, y_test, full
    )
    usable = ~np.isnan(branches["image"]).any(axis=1)
    if usable.any():
        results["image_only_rows_with_image"] = score_probabilities(
            branches["image"][usable], classes, y_test[usable], full[usable]
        )
        results["fused_rows_with_image"] = score_probabilities(
            branches["fused"][usable], classes, y_test[usable], full[usable]
        )
        results["text_fused_rows_with_image"] = score_probabilities(
            text_fused_probabilities(classifier, test)[usable],
            classes,
            y_test[usable],
            full[usable],
        )
    results["fused"] = score_probabilities(branches["fused"], classes, y_test, full)

    # Uncached decoding speed, for the full-dataset estimate (training reads the cache).
    image_paths = test.loc[with_image, "image_path"].tolist()
    tick = time.perf_counter()
    for path in image_paths:
        decode_image(Path(path), classifier.model_params.image.image_size)
    decode_s_per_image = (time.perf_counter() - tick) / max(1, len(image_paths))

    with tempfile.TemporaryDirectory() as tmp:
        classifier.save(Path(tmp))
        results["model_size_mb"] = (
            sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
        )

    text_frame = test[["designation", "description"]]
    image_frame = test.loc[with_image, ["designation", "description", "image_path"]]
    results["speed"] = {
        "text_only": measure_throughput(classifier, text_frame, args.speed_rows),
        "with_images": measure_throughput(classifier, image_frame, min(args.speed_rows, 1000))
        if len(image_frame)
        else {},
    }
    n_products = len(train) + len(val) + len(test) + len(load_split(processed, "unseen"))
    train_fraction = len(train) / n_products
    results["cost"] = {
        "fit_s": fit_s,
        "timings": classifier.timings,
        "peak_rss_mb": rss_after,
        "peak_rss_before_fit_mb": rss_before,
        "torch_threads": torch.get_num_threads(),
        "decode_s_per_image": decode_s_per_image,
        "full_dataset_estimate": estimate_full_dataset(
            classifier.timings,
            len(train),
            decode_s_per_image,
            int(train["has_image"].sum()),
            train_fraction,
            (len(train) + len(val)) / n_products,
        ),
    }
    results["fusion"] = {
        "branches": classifier.branches,
        "weights": classifier.fusion.weights.tolist() if classifier.fusion else [],
        "temperatures": classifier.temperatures,
    }
    results["history"] = classifier.history
    results["params"] = classifier.params
    results["meta"] = {
        "source": str(args.source),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": torch.get_num_threads(),
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
    }
    return results


def format_report(results: dict[str, Any]) -> str:
    """The human-readable table printed at the end."""
    lines = [
        "",
        "quality on the test split (weighted F1 on text_origin == 'full' rows is the target metric)",
    ]
    header = (
        f"{'model':<34}{'wF1 full':>9}{'wF1 all':>9}{'macroF1':>9}{'acc':>8}{'ECE':>8}{'rows':>7}"
    )
    lines += [header, "-" * len(header)]
    rows = [
        ("reference (tfidf words + svc)", "reference"),
        ("sparse branch only", "sparse"),
        ("neural text branch only", "text_nn"),
        ("transformer branch only", "transformer"),
        ("text fused (all text branches)", "text_fused"),
        ("image only (rows with image)", "image_only_rows_with_image"),
        ("text fused (rows with image)", "text_fused_rows_with_image"),
        ("fused (rows with image)", "fused_rows_with_image"),
        ("FUSED (all branches)", "fused"),
    ]
    for label, key in rows:
        if key not in results:
            continue
        r = results[key]
        ece = f"{r['ece']:.3f}" if "ece" in r else "-"
        lines.append(
            f"{label:<34}{r['weighted_f1_full']:>9.4f}{r['weighted_f1']:>9.4f}{r['macro_f1']:>9.4f}"
            f"{r['accuracy']:>8.4f}{ece:>8}{int(r['n']):>7}"
        )
    gain = results["fused"]["weighted_f1_full"] - results["reference"]["weighted_f1_full"]
    lines.append(f"fused vs reference on full rows: {gain:+.4f} weighted F1")
    cost = results["cost"]
    timings = ", ".join(f"{k.removeprefix('fit/')} {v:.1f}s" for k, v in cost["timings"].items())
    lines += [
        "",
        f"training: {cost['fit_s']:.1f}s ({timings}); {cost['torch_threads']} torch threads",
        f"peak RSS: {cost['peak_rss_mb']:.0f} MB; saved model {results['model_size_mb']:.0f} MB",
    ]
    speed = results["speed"]
    lines.append(
        f"batch prediction, text only: {speed['text_only']['products_per_s']:.0f} products/s "
        f"({int(speed['text_only']['rows'])} rows)"
    )
    if speed["with_images"]:
        lines.append(
            f"batch prediction, with images: {speed['with_images']['products_per_s']:.0f} products/s "
            f"({int(speed['with_images']['rows'])} rows, JPEG decoding included)"
        )
    est = cost["full_dataset_estimate"]
    lines.append(
        f"full dataset ({FULL_DATASET_PRODUCTS:,} products, ~{est['full_train_products']:,.0f} in train): "
        f"~{est['total_s'] / 60:.0f} min training on this machine "
        f"(text branches ~{est['text_branches_s'] / 60:.1f} min x{est['text_scale_factor']:.1f}, "
        f"image branch ~{est['image_branch_s'] / 60:.0f} min x{est['image_scale_factor']:.0f} images, "
        f"first image decoding ~{est['image_decode_first_run_s'] / 60:.0f} min)"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        default=str(REPO_ROOT.parent / "shared/data/rakuten-sample"),
        help="labelled data in the official layout",
    )
    parser.add_argument(
        "--params", default=str(REPO_ROOT / "params.yaml"), help="params.yaml to use"
    )
    parser.add_argument(
        "--work-dir",
        # Outside the repository: the data must not be copied into the working tree.
        default=str(Path(tempfile.gettempdir()) / "rakuten-bench"),
        help="where the raw and processed layers and the image cache go",
    )
    parser.add_argument(
        "--image-cache", default="", help="image cache dir (default: in --work-dir)"
    )
    parser.add_argument(
        "--out", default="", help="JSON results file (default: bench/results/bench_<time>.json)"
    )
    parser.add_argument(
        "--speed-rows", type=int, default=3000, help="rows per throughput measurement"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(args.source) / "X_train_update.csv").is_file():
        print(f"error: no X_train_update.csv in --source {args.source}", file=sys.stderr)
        return 2
    results = run(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else BENCH_DIR / "results" / f"bench_{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    print(format_report(results))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
