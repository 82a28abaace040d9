"""Prepare the processed layer: clean text, resolve images, split without leakage.

Reads the raw layer (never modifies it) and writes, atomically, into the processed dir:

* `{train,val,test,unseen}.parquet` with exactly `schema.PROCESSED_COLUMNS`;
* `splits/<split>.txt`, the official indexes of each split, one per line;
* `metadata.json`: where the raw data was, parameters, sizes, class counts, manifest hash;
* `feedback_report.json` and `feedback_holdout.parquet`: what the reviewers' corrections
  (`data/feedback`, params `data.feedback`) added to the training split, and the recent
  feedback products held out to compare models on (`data/feedback.py`).

The split is stratified by class and grouped by normalised text: products whose
`normalize_for_dedup(designation, description)` is the same always land in the same
split, so a duplicate cannot leak from train into evaluation. It depends only on the data
and the seed (no global random state), so it is the same on every run. Feedback rows only
ever join the training split: val, test and unseen are the same with or without them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.data.feedback import (
    FEEDBACK_HOLDOUT_FILE,
    FEEDBACK_REPORT_FILE,
    FeedbackMerge,
    count_classes,
)
from rakuten_mlops.data.manifest import sha256_file
from rakuten_mlops.data.processed import build_processed_frame, find_usable_images
from rakuten_mlops.data.validate import dedup_keys, load_labelled_products, load_text_origin
from rakuten_mlops.errors import DataError
from rakuten_mlops.params import DataParams, FeedbackParams, parse_section
from rakuten_mlops.schema import (
    CATEGORY_NAMES,
    IMAGE_TRAIN_DIR,
    INDEX_COL,
    MANIFEST_FILE,
    PROCESSED_COLUMNS,
    PROCESSED_METADATA_FILE,
    SPLITS,
    TARGET_COL,
)

SPLITS_DIR = "splits"
# Order in which each class's shuffled groups are cut; train takes the remainder. Test comes
# first, so the test split depends on `test_size` and the seed only: changing `unseen_size`
# or `val_size` never moves a product in or out of the split the promotion gate compares on.
_CUT_ORDER = ("test", "unseen", "val")


@dataclass
class PrepareResult:
    """What `prepare_dataset` wrote."""

    out_dir: Path
    sizes: dict[str, int]
    images: dict[str, int]
    class_counts: dict[str, dict[int, int]]
    seed: int
    files: list[Path] = field(default_factory=list)
    feedback: FeedbackMerge | None = None

    def summary(self) -> str:
        """Sizes and a compact class-count table per split."""
        total = sum(self.sizes.values())
        lines = [f"prepared {total:,} products into {self.out_dir} (seed {self.seed})"]
        header = f"{'code':>5} {'category':<24}" + "".join(f"{s:>8}" for s in SPLITS)
        lines.append(header + f"{'total':>8}")
        for code in sorted({c for counts in self.class_counts.values() for c in counts}):
            counts = [self.class_counts[s].get(code, 0) for s in SPLITS]
            name = CATEGORY_NAMES.get(code, "?")[:24]
            lines.append(
                f"{code:>5} {name:<24}" + "".join(f"{n:>8,}" for n in counts) + f"{sum(counts):>8,}"
            )
        lines.append(
            f"{'':>5} {'products':<24}"
            + "".join(f"{self.sizes[s]:>8,}" for s in SPLITS)
            + f"{total:>8,}"
        )
        lines.append(
            f"{'':>5} {'with an image':<24}"
            + "".join(f"{self.images[s]:>8,}" for s in SPLITS)
            + f"{sum(self.images.values()):>8,}"
        )
        if self.feedback is not None:
            lines.append(self.feedback.summary())
        return "\n".join(lines)


def prepare_dataset(
    raw_dir: Path, out_dir: Path, params: dict[str, Any], *, feedback_dir: Path | None = None
) -> PrepareResult:
    """Build the processed layer from the raw layer (and the feedback layer).

    Args:
        raw_dir: the raw directory (official layout, see `data import`).
        out_dir: the processed directory (created if needed).
        params: the `data:` section of params.yaml (`val_size`, `test_size`,
            `unseen_size`, `seed`, `feedback`).
        feedback_dir: the feedback layer (default: `data.feedback.dir`).

    Raises:
        DataError: the raw data is missing or unusable.
        ParamsError: the split parameters are invalid.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    split_params = parse_section(DataParams, params, "data")
    if not raw_dir.is_dir():
        raise DataError(f"raw directory not found: {raw_dir}")
    products = load_labelled_products(raw_dir)
    origin = load_text_origin(raw_dir)
    image_ok = find_usable_images(raw_dir, products)

    processed = build_processed_frame(products, origin, image_ok)
    splits = assign_splits(
        dedup_keys(products), products[TARGET_COL], split_params.fractions(), split_params.seed
    )
    frames = {name: processed[splits.to_numpy() == name].reset_index(drop=True) for name in SPLITS}
    frames, holdout, feedback = _merge_feedback_layer(
        frames, split_params.feedback, split_params.seed, raw_dir, feedback_dir
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPLITS_DIR).mkdir(exist_ok=True)
    files: list[Path] = []
    for name, frame in frames.items():
        files.append(_write_atomic(out_dir / f"{name}.parquet", _parquet_bytes(frame)))
        ids = "".join(f"{i}\n" for i in frame[INDEX_COL])
        files.append(_write_atomic(out_dir / SPLITS_DIR / f"{name}.txt", ids.encode()))

    result = PrepareResult(
        out_dir=out_dir,
        sizes={name: len(frame) for name, frame in frames.items()},
        images={name: int(frame["has_image"].sum()) for name, frame in frames.items()},
        class_counts={name: count_classes(frame[TARGET_COL]) for name, frame in frames.items()},
        seed=split_params.seed,
        files=files,
        feedback=feedback,
    )
    files.append(_write_atomic(out_dir / FEEDBACK_HOLDOUT_FILE, _parquet_bytes(holdout)))
    files.append(
        _write_atomic(
            out_dir / FEEDBACK_REPORT_FILE,
            (json.dumps(feedback.to_dict(), indent=2) + "\n").encode(),
        )
    )
    metadata = _metadata(raw_dir, out_dir, split_params, result)
    files.append(
        _write_atomic(
            out_dir / PROCESSED_METADATA_FILE,
            (json.dumps(metadata, indent=2, ensure_ascii=False) + "\n").encode(),
        )
    )
    return result


def _merge_feedback_layer(
    frames: dict[str, pd.DataFrame],
    feedback_params: FeedbackParams,
    seed: int,
    raw_dir: Path,
    feedback_dir: Path | None,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, FeedbackMerge]:
    """Merge `data/feedback` into train; image paths relative to the raw dir like the rest."""
    from rakuten_mlops.data.feedback import (
        load_feedback_layer,
        merge_feedback,
        processed_image_path,
    )

    directory = Path(feedback_dir) if feedback_dir is not None else Path(feedback_params.dir)
    layer = load_feedback_layer(directory) if feedback_params.enabled else None
    if layer is None:
        layer = frames["train"].iloc[0:0].assign(batch="", product_key="")
    frames, holdout, report = merge_feedback(frames, layer, feedback_params, seed)
    for frame in (frames["train"], holdout):
        from_feedback = frame["text_origin"].eq("feedback")
        frame.loc[from_feedback, "image_path"] = [
            processed_image_path(p, raw_dir) for p in frame.loc[from_feedback, "image_path"]
        ]
    return frames, holdout, report


def load_feedback_holdout(processed_dir: Path) -> pd.DataFrame:
    """The held-out recent feedback products of a processed dir (empty when there are none).

    Raises:
        DataError: the processed dir or its files are unreadable.
    """
    path = Path(processed_dir) / FEEDBACK_HOLDOUT_FILE
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PROCESSED_COLUMNS})
    return _read_processed(Path(processed_dir), path)


def assign_splits(
    keys: pd.Series, labels: pd.Series, fractions: dict[str, float], seed: int
) -> pd.Series:
    """Assign each row to a split, stratified by label, never splitting a group.

    Rows with the same non-empty key form one group, labelled by its most frequent label.
    Within each label, groups are ordered by a seeded hash of their key and cut at the
    cumulative row fractions of `test`, `unseen`, `val`; the rest is `train`. Same data
    and seed, same split, whatever the row order.

    Args:
        keys: group key per row (`dedup_keys`); "" means the row is its own group.
        labels: class per row (same index).
        fractions: split name -> fraction of the rows (`DataParams.fractions`).
        seed: changes the order of the groups, hence the split.

    Returns:
        The split name of each row (same index).
    """
    frame = pd.DataFrame({"key": keys.astype(str), "label": labels}, index=keys.index)
    alone = frame["key"].eq("")
    # "#" never appears in a normalised key (only word characters and spaces), so these
    # one-row keys cannot collide with real texts. (No NUL: pandas hashes C strings.)
    frame.loc[alone, "key"] = [f"#row {i}" for i in frame.index[alone]]

    counts = frame.groupby(["key", "label"]).size().rename("n").reset_index()
    # The group's label: its most frequent one, the smallest code on a tie.
    counts = counts.sort_values(["key", "n", "label"], ascending=[True, False, True])
    groups = counts.groupby("key", sort=True).agg(label=("label", "first"), n=("n", "sum"))
    groups["rank"] = [_seeded_hash(seed, key) for key in groups.index]
    groups = groups.reset_index().sort_values(["label", "rank", "key"])

    edges = np.cumsum([fractions.get(name, 0.0) for name in _CUT_ORDER])
    group_split: dict[str, str] = {}
    for _label, members in groups.groupby("label", sort=True):
        sizes = members["n"].to_numpy()
        # A group goes where its middle row falls on the class's cumulative axis.
        middles = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
        slots = np.searchsorted(edges, middles, side="right")
        for key, slot in zip(members["key"], slots, strict=True):
            group_split[key] = _CUT_ORDER[slot] if slot < len(_CUT_ORDER) else "train"
    return frame["key"].map(group_split).rename("split")


def load_split(processed_dir: Path, split: str) -> pd.DataFrame:
    """Read one processed split with `image_path` made absolute ("" when no image).

    The raw directory is looked up, in order, relative to `processed_dir` (survives moving
    the project), as resolved at prepare time, then as given at prepare time.

    Raises:
        DataError: unknown split, missing or malformed files, or images whose raw
            directory cannot be found.
    """
    processed_dir = Path(processed_dir)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    return _read_processed(processed_dir, processed_dir / f"{split}.parquet")


def _read_processed(processed_dir: Path, path: Path) -> pd.DataFrame:
    meta_path = processed_dir / PROCESSED_METADATA_FILE
    for needed in (path, meta_path):
        if not needed.is_file():
            raise DataError(f"{needed} not found: run `rakuten-mlops data prepare` first")
    try:
        frame = pd.read_parquet(path)
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} or {meta_path}: {exc}") from exc
    if tuple(frame.columns) != PROCESSED_COLUMNS:
        raise DataError(
            f"{path}: columns {list(frame.columns)} differ from the expected "
            f"{list(PROCESSED_COLUMNS)}: prepare the data again"
        )
    relative = frame["image_path"].astype(str)
    if relative.ne("").any():
        raw_dir = _find_raw_dir(processed_dir, metadata, meta_path)
        frame["image_path"] = [str(raw_dir / rel) if rel else "" for rel in relative]
    return frame


def _find_raw_dir(processed_dir: Path, metadata: dict[str, Any], meta_path: Path) -> Path:
    candidates: list[Path] = []
    if metadata.get("raw_dir_from_processed"):
        candidates.append((processed_dir / metadata["raw_dir_from_processed"]).resolve())
    for key in ("raw_dir_resolved", "raw_dir"):
        if metadata.get(key):
            candidates.append(Path(metadata[key]))
    for candidate in candidates:
        if (candidate / IMAGE_TRAIN_DIR).is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates) or "none recorded"
    raise DataError(f"{meta_path}: raw directory with the images not found (tried {tried})")


def _metadata(
    raw_dir: Path, out_dir: Path, params: DataParams, result: PrepareResult
) -> dict[str, Any]:
    raw_resolved = raw_dir.resolve()
    manifest = raw_dir / MANIFEST_FILE
    return {
        "raw_dir": str(raw_dir),
        "raw_dir_resolved": str(raw_resolved),
        "raw_dir_from_processed": os.path.relpath(raw_resolved, out_dir.resolve()),
        "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
        "params": {
            "val_size": params.val_size,
            "test_size": params.test_size,
            "unseen_size": params.unseen_size,
            "seed": params.seed,
        },
        "group_key": "normalize_for_dedup(designation, description)",
        "columns": list(PROCESSED_COLUMNS),
        "products": sum(result.sizes.values()),
        "sizes": result.sizes,
        "images": result.images,
        "class_counts": {
            name: {str(code): n for code, n in counts.items()}
            for name, counts in result.class_counts.items()
        },
        "feedback": {
            "batches": result.feedback.batches if result.feedback else [],
            "merged": result.feedback.merged if result.feedback else 0,
            "holdout": result.feedback.holdout if result.feedback else 0,
        },
    }


def _seeded_hash(seed: int, key: str) -> int:
    # 56 bits: fits an int64 column, collisions are broken by the key itself.
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big")


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _write_atomic(path: Path, payload: bytes) -> Path:
    """Write to a temporary name in the same directory, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_bytes(payload)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc}") from exc
    return path
