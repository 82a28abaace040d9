"""Performance without labels vs measured: `monitor estimate` against real labels.

The default model (trained once on the sample by bench_api.py, or --model) predicts the
test split, the unseen split (products no split of the training ever saw) and the test split
under each drift of the traffic simulator; for each, the weighted F1 estimated from the
probabilities alone (with its 95 % interval) is printed beside the weighted F1 measured with
the true labels. The target: within +-0.02 of the measured value on unseen real products,
with the measured value inside the interval.

Usage:
    python bench/bench_estimate.py [--model DIR] [--source ../shared/data/rakuten-sample]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import REPO, WORKDIR, ensure_model
from rakuten_mlops.data.prepare import load_split
from rakuten_mlops.evaluation.evaluate import build_model_input
from rakuten_mlops.models.pyfunc import load_pyfunc_model
from rakuten_mlops.monitoring.estimate import estimate_performance, probability_matrix
from rakuten_mlops.schema import TARGET_COL
from rakuten_mlops.simulation.traffic import apply_drift

SCENARIOS = [
    ("test split", "test", ()),
    ("unseen split (never trained on)", "unseen", ()),
    ("test, capitals", "test", ("capitals",)),
    ("test, no-description", "test", ("no-description",)),
    ("test, no-images", "test", ("no-images",)),
    ("test, category-surge", "test", ("category-surge",)),
    ("test, capitals + no-description", "test", ("capitals", "no-description")),
    ("test, new-merchant", "test", ("new-merchant",)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="MLflow model directory (default: train one)")
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/rakuten-sample")
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()

    model_dir = args.model or ensure_model(args.source, WORKDIR)
    processed = WORKDIR / "processed" if args.model is None else None
    if processed is None:
        parser.error("--model needs the processed splits it was trained on; omit it to train")
    model = load_pyfunc_model(model_dir)
    rows = []
    for name, split, drifts in SCENARIOS:
        frame = load_split(processed, split)
        if drifts:
            frame = apply_drift(frame, drifts, size=len(frame), seed=0)
        started = time.perf_counter()
        output = model.predict(build_model_input(frame))
        codes = output[[f"top_{k}_code" for k in (1, 2, 3)]].to_numpy(dtype=np.int64)
        probs = output[[f"top_{k}_proba" for k in (1, 2, 3)]].to_numpy(dtype=np.float64)
        predicted = output["prdtypecode"].to_numpy(dtype=np.int64)
        estimate = estimate_performance(
            predicted, probability_matrix(codes, probs), draws=args.draws
        )
        seconds = time.perf_counter() - started
        truth = frame[TARGET_COL].to_numpy(dtype=np.int64)
        measured = float(f1_score(truth, predicted, average="weighted"))
        rows.append(
            {
                "scenario": name,
                "products": len(frame),
                "estimated": estimate.estimated_weighted_f1,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "measured": measured,
                "error": estimate.estimated_weighted_f1 - measured,
                "inside": estimate.ci_low <= measured <= estimate.ci_high,
                "seconds": seconds,
            }
        )
        print(f"  {name:<34} done", flush=True)

    print(
        "\n| traffic | products | estimated wF1 | 95 % interval | measured wF1 | error | inside |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['products']:,} | {r['estimated']:.4f} | "
            f"{r['ci_low']:.4f} - {r['ci_high']:.4f} | {r['measured']:.4f} | "
            f"{r['error']:+.4f} | {'yes' if r['inside'] else 'no'} |"
        )
    print("\nreference (the target): |error| <= 0.02 on unseen real products, measured inside")
    out = WORKDIR.parent / f"bench_estimate_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"model": str(model_dir), "rows": rows}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
