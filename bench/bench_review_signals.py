"""Would a review rule keep more products at the target precision with more than the top-1
probability? The signals the issue suggested, measured before building them into the rule.

The default model, text branches only and without refit (so that the val split's scores are
held out), is trained on the processed train split of `make pipeline`. On val it learns two
rules, each the lowest score whose products reach the target precision (out-of-fold for the
meta-model):

* `top-1 threshold`: the fused top-1 probability (the product's global rule);
* `meta-model`: a logistic regression of "the prediction is right" on the top-1 probability
  (logit), the top-1 / top-2 margin and log-ratio, how many of the sparse branch's three
  linear models agree with the fused top-1, whether a description exists, the title's
  length and the predicted class.

Both are applied to the test and unseen splits (coverage, precision), beside what each score
would reach with a threshold chosen with hindsight on those products.

    .venv/bin/python bench/bench_review_signals.py [--data-dir data/processed] [--target 0.95]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from rakuten_mlops.data.prepare import load_split
from rakuten_mlops.models.classifier import clean_column
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.review import lowest_threshold_reaching
from rakuten_mlops.params import load_params

REPO = Path(__file__).resolve().parents[1]


def signals(model: ProductClassifier, frame: pd.DataFrame) -> dict[str, Any]:
    """Top-1 probability, agreement count, meta-model features and correctness per row."""
    probs = model.predict_proba(frame)
    order = np.argsort(-probs, axis=1, kind="stable")
    rows = np.arange(len(probs))
    top1, top2 = probs[rows, order[:, 0]], probs[rows, order[:, 1]]
    titles = clean_column(frame, "designation", required=True)
    descriptions = clean_column(frame, "description", required=False)
    assert model.sparse is not None
    members = model.sparse.member_scores(titles, descriptions)
    agree = sum((m.argmax(axis=1) == order[:, 0]).astype(int) for m in members)
    eps = 1e-12
    features = np.column_stack(
        [
            np.log((top1 + eps) / (1 - top1 + eps)),
            top1 - top2,
            np.log(top1 + eps) - np.log(top2 + eps),
            *[(agree == k).astype(float) for k in range(len(members) + 1)],
            np.array([bool(text) for text in descriptions], dtype=float),
            np.log1p([len(title) for title in titles]),
            np.eye(len(model.classes_))[order[:, 0]],
        ]
    )
    correct = model.classes_[order[:, 0]] == frame["prdtypecode"].to_numpy()
    return {
        "top1": top1,
        "agree": agree,
        "members": len(members),
        "features": features,
        "correct": correct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "processed")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()

    params = load_params(args.params)["model"]
    params["fusion"] = {**(params.get("fusion") or {}), "refit": False}
    params["image"] = {**(params.get("image") or {}), "enabled": False}
    train, val = load_split(args.data_dir, "train"), load_split(args.data_dir, "val")
    tick = time.perf_counter()
    model = ProductClassifier(params, seed=42).fit(train, val, progress=False)
    print(f"trained on {len(train):,} products in {time.perf_counter() - tick:.0f} s")

    held = signals(model, val)
    n = held["members"]
    print(f"val ({len(val):,} held-out products), accuracy {held['correct'].mean():.3f}:")
    for k in range(n + 1):
        rows = held["agree"] == k
        accuracy = held["correct"][rows].mean() if rows.any() else float("nan")
        print(
            f"  {k} of {n} linear models agree with the fused top-1: "
            f"{rows.mean():6.1%} of products, accuracy {accuracy:.3f}"
        )
    meta = LogisticRegression(C=1.0, max_iter=2000)
    oof = cross_val_predict(meta, held["features"], held["correct"], cv=5, method="predict_proba")[
        :, 1
    ]
    cuts = {
        "top-1 threshold": lowest_threshold_reaching(held["top1"], held["correct"], args.target),
        "meta-model": lowest_threshold_reaching(oof, held["correct"], args.target),
    }
    meta.fit(held["features"], held["correct"])
    print(
        f"  coverage at {args.target:.0%} (chosen on val): top-1 "
        f"{(held['top1'] >= cuts['top-1 threshold']).mean():.3f}, meta-model (out-of-fold) "
        f"{(oof >= cuts['meta-model']).mean():.3f}"
    )
    print(
        f"\n{'split':<8}{'rule':<18}{'coverage':>10}{'precision':>11}"
        f"{'hindsight coverage at ' + format(args.target, '.0%'):>32}"
    )
    for split in ("test", "unseen"):
        frame = load_split(args.data_dir, split)
        seen = signals(model, frame)
        scores = {
            "top-1 threshold": seen["top1"],
            "meta-model": meta.predict_proba(seen["features"])[:, 1],
        }
        for name, score in scores.items():
            kept = score >= cuts[name]
            hindsight = lowest_threshold_reaching(score, seen["correct"], args.target)
            print(
                f"{split:<8}{name:<18}{kept.mean():>10.3f}{seen['correct'][kept].mean():>11.3f}"
                f"{(score >= hindsight).mean():>32.3f}"
            )


if __name__ == "__main__":
    main()
