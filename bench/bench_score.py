"""Catalogue scoring throughput: `score --engine local` vs `--engine spark` at 1 and 2 cores.

    python bench/bench_score.py [--source ../shared/data/rakuten-sample] [--model DIR]

Scores the whole shared sample (X_train_update.csv, images by path) with each engine, each
configuration in its own process pinned to N cores (CPU affinity, inherited by Spark's JVM
and Python workers). Spark runs twice in one session: "cold" (JVM start, model shipped and
loaded by each worker) and "warm" (the steady state of a long job). Prints rows/s side by
side and the arithmetic of an estimate for re-scoring 10 million listings on a 10-node
cluster. Without --model, a small model is trained on 2,000 sample rows (tiny parameters,
~15 s); the default model of `make run` is heavier (README: ~1,050 text-only rows/s on 2
cores for batch predict), so pass it with --model for production numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
X_FILE = "X_train_update.csv"
IMAGES = "images/image_train"
TARGET_ROWS = 10_000_000
NODES = 10
CORES_PER_NODE = 16
# Share of a core left to scoring on a real cluster (shuffle, I/O, stragglers, retries).
CLUSTER_EFFICIENCY = 0.7


def run_config(engine: str, cores: int, model: Path, source: Path, out: Path) -> dict[str, float]:
    """Score the sample in this process (already pinned to `cores` CPUs)."""
    import torch

    from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model
    from rakuten_mlops.scoring.local import score_local
    from rakuten_mlops.scoring.spark import build_spark_session, score_spark

    inputs = [source / X_FILE]
    images = source / IMAGES
    result: dict[str, float] = {}
    if engine == "local":
        torch.set_num_threads(cores)
        started = time.perf_counter()
        predict = as_predict_fn(load_pyfunc_model(model))
        load_s = time.perf_counter() - started
        summary = score_local(predict, inputs, out / "local", images_dir=images, progress=False)
        result = {"rows": summary.rows, "seconds": summary.seconds, "load_s": load_s}
    else:
        started = time.perf_counter()
        spark = build_spark_session(f"local[{cores}]", app_name="bench-score")
        session_s = time.perf_counter() - started
        try:
            cold = score_spark(model, inputs, out / "cold", images_dir=images, spark=spark)
            warm = score_spark(model, inputs, out / "warm", images_dir=images, spark=spark)
        finally:
            spark.stop()
        result = {
            "rows": cold.rows,
            "seconds": cold.seconds + session_s,
            "warm_seconds": warm.seconds,
            "session_s": session_s,
        }
    return result


def spawn(engine: str, cores: int, model: Path, source: Path, workdir: Path) -> dict[str, float]:
    """One configuration in a child process pinned to the first `cores` CPUs."""
    out = workdir / f"{engine}-{cores}"
    out.mkdir()
    command = [
        sys.executable, __file__, "--run", engine, "--cores", str(cores),
        "--model", str(model), "--source", str(source), "--out", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, set(range(cores))),
        env={**os.environ, "OMP_NUM_THREADS": str(cores)},
    )
    if child.returncode != 0:
        raise SystemExit(f"{engine} on {cores} core(s) failed:\n{child.stderr[-3000:]}")
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def train_model(source: Path, workdir: Path) -> Path:
    """The small model of the tests (tests/sample_model.py)."""
    sys.path[:0] = [str(REPO / "tests")]
    from sample_model import train_sample_model

    return train_sample_model(source, workdir / "model")


def main() -> None:
    """Run every configuration and print the table and the estimate."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/rakuten-sample")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--run", choices=["local", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_config(args.run, args.cores, args.model, args.source, args.out)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        workdir = Path(tmp)
        model = args.model or train_model(args.source, workdir)
        results = {
            (engine, cores): spawn(engine, cores, model, args.source, workdir)
            for cores in (1, 2)
            for engine in ("local", "spark")
        }
    rows = int(results[("local", 1)]["rows"])
    print(
        f"\nscore on the shared sample: {rows:,} rows, model {'--model' if args.model else 'small (2,000 rows, tiny params)'}"
    )
    print(f"{'engine':<8}{'cores':>6}{'job rows/s':>12}{'warm rows/s':>13}{'process s':>11}")
    for (engine, cores), r in results.items():
        warm = f"{rows / r['warm_seconds']:,.0f}" if "warm_seconds" in r else "-"
        print(
            f"{engine:<8}{cores:>6}{rows / r['seconds']:>12,.0f}{warm:>13}{r['process_s']:>11.1f}"
        )
    per_core = rows / results[("spark", 1)]["warm_seconds"]
    per_core_2 = rows / results[("spark", 2)]["warm_seconds"] / 2
    cluster_cores = NODES * CORES_PER_NODE
    rate = per_core * cluster_cores * CLUSTER_EFFICIENCY
    minutes = TARGET_ROWS / rate / 60
    print(
        f"\nestimate for {TARGET_ROWS:,} listings on {NODES} nodes x {CORES_PER_NODE} cores:\n"
        f"  warm Spark throughput per core here: {per_core:,.0f} rows/s (1 core), "
        f"{per_core_2:,.0f} rows/s per core at 2 cores\n"
        f"  {per_core:,.0f} rows/s x {cluster_cores} cores x {CLUSTER_EFFICIENCY} efficiency "
        f"= {rate:,.0f} rows/s\n"
        f"  {TARGET_ROWS:,} / {rate:,.0f} = {TARGET_ROWS / rate:,.0f} s = {minutes:.1f} min "
        f"of scoring, + ~1-2 min of start-up (executors, model shipped and loaded once each)"
    )


if __name__ == "__main__":
    main()
