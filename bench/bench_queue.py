"""A simulated review day: how right the catalogue is after N reviews, by queue order.

A day of traffic is a split of the sample the default model never trained on (test: 3,009
products, unseen: 1,005). The model's review rule auto-accepts some products and flags the
rest; reviewers correct N flagged products (a reviewed product ends with its true code) and
the others keep the model's code. This prints the accuracy of the day's catalogue after N
reviews for two queue orders, oldest first (arrival order) and least confident first (the
console's "most valuable first" when no shadow challenger disagrees), same N, beside the
estimate the console shows without labels (`review_day.estimated_accuracy`: a reviewed
product is right, an auto-accepted one at the rule's held-out precision, a waiting one at
its calibrated confidence).

Usage:
    python bench/bench_queue.py [--split test] [--source ../shared/data/rakuten-sample]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import REPO, WORKDIR, ensure_model
from rakuten_mlops.data.prepare import load_split
from rakuten_mlops.evaluation.evaluate import build_model_input
from rakuten_mlops.models.pyfunc import load_pyfunc_model, native_classifier
from rakuten_mlops.schema import TARGET_COL
from rakuten_mlops.serving.services.review_day import estimated_accuracy

BUDGETS = (0, 100, 200, 400, 800)


def accuracy_after(order: np.ndarray, correct: np.ndarray, budget: int) -> float:
    """Share of right codes once the first `budget` products of `order` are reviewed."""
    fixed = correct.copy()
    fixed[order[:budget]] = True
    return float(fixed.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="test", choices=["test", "unseen"])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/rakuten-sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model_dir = ensure_model(args.source, WORKDIR)
    model = load_pyfunc_model(model_dir)
    frame = load_split(WORKDIR / "processed", args.split)
    # Arrival order: the day's products in a random order (the split has no time).
    frame = frame.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    output = model.predict(build_model_input(frame))
    correct = output["prdtypecode"].to_numpy(dtype=np.int64) == frame[TARGET_COL].to_numpy(
        dtype=np.int64
    )
    confidence = output["confidence"].to_numpy(dtype=np.float64)
    flagged = np.flatnonzero(output["needs_review"].to_numpy(dtype=bool))
    n = len(frame)
    oldest = flagged  # arrival order
    least_confident = flagged[np.argsort(confidence[flagged], kind="stable")]
    classifier = native_classifier(model)
    rule = classifier.review_rule if classifier is not None else None
    # The rule's precision measured where the model never trained (here its held-out val
    # scores; the service uses its test evaluation's `auto_accept_precision`).
    auto_precision = rule.heldout_precision if rule and rule.heldout_precision else 0.0
    auto_accepted = n - len(flagged)

    print(
        f"{args.split} split as one day: {n:,} products, {len(flagged):,} flagged for review "
        f"({len(flagged) / n:.1%}), accuracy without review {correct.mean():.4f}"
    )
    rows = []
    # Up to every flagged product reviewed.
    for budget in [b for b in BUDGETS if b < len(flagged)] + [len(flagged)]:
        reviewed = least_confident[:budget]
        waiting = least_confident[budget:]
        estimated = estimated_accuracy(
            len(reviewed), auto_accepted, auto_precision, float(confidence[waiting].sum()), n
        )
        rows.append(
            {
                "reviews": budget,
                "oldest_first": accuracy_after(oldest, correct, budget),
                "least_confident_first": accuracy_after(least_confident, correct, budget),
                "estimated_least_confident_first": estimated,
            }
        )
    print(
        "\n| reviews | oldest first | least confident first | gain | "
        "estimated without labels (least confident first) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        gain = r["least_confident_first"] - r["oldest_first"]
        print(
            f"| {r['reviews']:,} | {r['oldest_first']:.4f} | {r['least_confident_first']:.4f} | "
            f"{gain:+.4f} | {r['estimated_least_confident_first']:.4f} |"
        )
    out = WORKDIR.parent / f"bench_queue_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps({"model": str(model_dir), "split": args.split, "rows": rows}, indent=2)
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
