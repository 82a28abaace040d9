"""Auto-accept at the target precision, cross-validated: the review rule on unseen folds.

`bench_review.py` measures one model on two splits (test: 3,009 products, unseen: 1,005).
This one gives the estimate the product can stand on: on `bench_cv.py`'s folds (5,
stratified by class, grouped by normalised text), each fold trains the default classifier
as `train` does (text branches of `params.yaml`, fusion and review rule fitted on the val
part's held-out scores, then refit on train + val; the image branch left out for time, 95 %
of the products have none) and applies its rule to the fold's test products, which no part
of the training saw. Printed per fold and as mean +- std: the precision and the coverage of
the auto-accepted products, beside one confidence threshold chosen *with hindsight* on the
same products (the best a single threshold can do there).

    nice .venv/bin/python bench/bench_review_cv.py --source ../shared/data/rakuten-sample
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_cv import cv_parser, cv_sample, inner_split  # noqa: E402
from rakuten_mlops.models.pipeline import ProductClassifier  # noqa: E402
from rakuten_mlops.models.review import lowest_threshold_reaching  # noqa: E402
from rakuten_mlops.params import load_params, parse_params  # noqa: E402

COVERAGE_TARGET = 0.70


def main(argv: list[str] | None = None) -> int:
    args = cv_parser(__doc__.splitlines()[0]).parse_args(argv)

    params = load_params(args.params)
    parsed = parse_params(params)
    seed, target = parsed.seed, parsed.review.target_precision
    data_params = dict(params.get("data") or {})
    model_params = dict(params.get("model") or {})
    model_params["image"] = {**(model_params.get("image") or {}), "enabled": False}
    frame, keys, groups, val_fraction = cv_sample(
        args.source, args.work_dir, data_params, seed, args.max_rows
    )
    labels = frame["prdtypecode"].to_numpy()
    print(f"{len(frame):,} products, {args.folds} folds, target precision {target:.2f}", flush=True)

    folds = []
    splitter = StratifiedGroupKFold(args.folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, test_rows) in enumerate(splitter.split(frame, labels, groups)):
        tick = time.perf_counter()
        fit_part, test = frame.iloc[fit_rows], frame.iloc[test_rows]
        is_train, is_val = inner_split(frame, keys, fit_rows, seed, val_fraction)
        train, val = fit_part[is_train], fit_part[is_val]
        model = ProductClassifier(model_params, seed=seed, target_precision=target)
        model.fit(train, val, progress=False)
        output = model.predict(test)
        correct = output["prdtypecode"].to_numpy(np.int64) == test["prdtypecode"].to_numpy(np.int64)
        confidence = output["confidence"].to_numpy(np.float64)
        keep = ~output["needs_review"].to_numpy(bool)
        hindsight = confidence >= lowest_threshold_reaching(confidence, correct, target)
        rule = model.review_rule
        result = {
            "fold": fold,
            "products": len(test),
            "accuracy": float(correct.mean()),
            "rule": rule.kind if rule else None,
            "precision": float(correct[keep].mean()) if keep.any() else float("nan"),
            "coverage": float(keep.mean()),
            "hindsight_coverage": float(hindsight.mean()),
            "seconds": time.perf_counter() - tick,
        }
        folds.append(result)
        print(
            f"fold {fold}: {result['seconds']:.0f}s | accuracy {result['accuracy']:.3f} | "
            f"rule ({result['rule']}) precision {result['precision']:.3f}, coverage "
            f"{result['coverage']:.3f} | hindsight coverage {result['hindsight_coverage']:.3f}",
            flush=True,
        )

    def stat(key: str) -> str:
        values = np.array([f[key] for f in folds])
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.3f} +- {spread:.3f}"

    print(f"\n| over {len(folds)} folds | mean +- std |")
    print("| --- | ---: |")
    print(f"| accuracy | {stat('accuracy')} |")
    print(f"| rule: precision of the auto-accepted | {stat('precision')} |")
    print(f"| rule: coverage | {stat('coverage')} |")
    print(
        f"| one threshold with hindsight: coverage at {target:.0%} | {stat('hindsight_coverage')} |"
    )
    print(
        f"\nreference (the target): coverage >= {COVERAGE_TARGET:.2f} at precision >= {target:.2f}"
    )
    out = BENCH_DIR / "results" / f"review_cv_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target": target, "folds": folds}, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
