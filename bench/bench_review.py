"""Auto-accept at a target precision: the model's review rule on products it never saw.

The default model (trained once on the sample by bench_api.py with params.yaml, which sets
`review.target_precision`) carries a review rule fitted on the validation split's held-out
scores. This prints, for the test split and the unseen split (products no split of the
training saw): the precision and the coverage of the auto-accepted products with 95 % Wilson
intervals, beside the reference, one confidence threshold chosen *with hindsight* on the
same products (the best a single threshold can do), and the 2-fold estimate of the rule on
the held-out scores it was fitted on (what the model knew when it chose its rule).

Usage:
    python bench/bench_review.py [--source ../shared/data/rakuten-sample]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import REPO, WORKDIR, ensure_model
from rakuten_mlops.data.prepare import load_split
from rakuten_mlops.evaluation.evaluate import build_model_input
from rakuten_mlops.evaluation.intervals import wilson_interval
from rakuten_mlops.models.pyfunc import load_pyfunc_model, native_classifier
from rakuten_mlops.models.review import lowest_threshold_reaching
from rakuten_mlops.schema import TARGET_COL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/rakuten-sample")
    args = parser.parse_args()

    model_dir = ensure_model(args.source, WORKDIR)
    model = load_pyfunc_model(model_dir)
    classifier = native_classifier(model)
    rule = classifier.review_rule if classifier is not None else None
    if rule is None:
        sys.exit(f"{model_dir}: the model carries no review rule (trained before rules existed)")
    target = rule.target_precision
    print(
        f"model {model_dir}: rule {rule.kind}, target precision {target:.2f}, "
        f"global threshold {rule.threshold:.3f}, {len(rule.class_thresholds)} class thresholds"
    )
    for kind, values in rule.selection.items():
        print(
            f"  2-fold on the {rule.heldout_products:,} held-out products, {kind}: "
            f"coverage {values['coverage']:.3f}, precision {values['precision']:.3f}"
        )
    rows = []
    for split in ("test", "unseen"):
        frame = load_split(WORKDIR / "processed", split)
        output = model.predict(build_model_input(frame))
        truth = frame[TARGET_COL].to_numpy(dtype=np.int64)
        predicted = output["prdtypecode"].to_numpy(dtype=np.int64)
        confidence = output["confidence"].to_numpy(dtype=np.float64)
        correct = predicted == truth
        keep = ~output["needs_review"].to_numpy(dtype=bool)
        n, accepted, hits = len(frame), int(keep.sum()), int(correct[keep].sum())
        threshold = lowest_threshold_reaching(confidence, correct, target)  # with hindsight
        hind = confidence >= threshold
        # Other scores a rule could threshold, each with hindsight too: the top-1 / top-2
        # margin and their log ratio. None keeps much more than the confidence does.
        ranked = np.sort(classifier.predict_proba(build_model_input(frame)), axis=1)
        other_scores = {
            "margin": ranked[:, -1] - ranked[:, -2],
            "log_ratio": np.log(ranked[:, -1] / np.maximum(ranked[:, -2], 1e-12)),
        }
        other = {
            name: float((score >= lowest_threshold_reaching(score, correct, target)).mean())
            for name, score in other_scores.items()
        }
        rows.append(
            {
                "split": split,
                "products": n,
                "accuracy": float(correct.mean()),
                "rule_precision": hits / accepted if accepted else math.nan,
                "rule_precision_ci": wilson_interval(hits, accepted),
                "rule_coverage": accepted / n,
                "rule_coverage_ci": wilson_interval(accepted, n),
                "hindsight_threshold": threshold,
                "hindsight_coverage": float(hind.mean()),
                "hindsight_precision": float(correct[hind].mean()) if hind.any() else math.nan,
                "hindsight_coverage_other_scores": other,
            }
        )
    print(
        f"\n| products | n | accuracy | rule: precision (95 % CI) | rule: coverage (95 % CI) "
        f"| one threshold with hindsight: coverage at {target:.0%} |"
    )
    print("| --- | ---: | ---: | --- | --- | ---: |")
    for r in rows:
        p_lo, p_hi = r["rule_precision_ci"]
        c_lo, c_hi = r["rule_coverage_ci"]
        print(
            f"| {r['split']} | {r['products']:,} | {r['accuracy']:.3f} | "
            f"{r['rule_precision']:.3f} ({p_lo:.3f}-{p_hi:.3f}) | "
            f"{r['rule_coverage']:.3f} ({c_lo:.3f}-{c_hi:.3f}) | "
            f"{r['hindsight_coverage']:.3f} (threshold {r['hindsight_threshold']:.3f}) |"
        )
    for r in rows:
        other = ", ".join(f"{k} {v:.3f}" for k, v in r["hindsight_coverage_other_scores"].items())
        print(f"{r['split']}: with hindsight, coverage at {target:.0%} by {other}")
    print(f"\nreference (the target): coverage >= 0.70 at precision >= {target:.2f} on unseen")
    out = WORKDIR.parent / f"bench_review_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps({"model": str(model_dir), "rule": rule.to_dict(), "rows": rows}, indent=2)
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
