"""Reviewers' corrections as labelled data: the append-only feedback layer and its merge.

The layer (`data/feedback/`) holds batches written by `feedback export`
(`data/feedback_export.py`), each in the official raw layout::

    data/feedback/
      batch-20261201T104512123456Z/
        X_train_update.csv   unnamed index, designation, description, productid, imageid
        Y_train_CVw08PX.csv  unnamed index, prdtypecode (the corrected code)
        images/image_train/image_<imageid>_product_<productid>.jpg   (stored copies)
        manifest.json        feedback ids covered, filters, class counts, file hashes

`load_feedback_layer` reads it: within and across batches the latest correction of a
product wins. `merge_feedback` is the pure function `data prepare` uses to add the layer
to the training split while the validation and test splits stay exactly as without
feedback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.errors import DataError
from rakuten_mlops.params import FeedbackParams
from rakuten_mlops.schema import (
    INDEX_COL,
    PROCESSED_COLUMNS,
    TARGET_COL,
    X_TRAIN_FILE,
)

logger = logging.getLogger(__name__)

BATCH_PREFIX = "batch-"
BATCH_MANIFEST = "manifest.json"
FEEDBACK_TEXT_ORIGIN = "feedback"
FEEDBACK_REPORT_FILE = "feedback_report.json"
FEEDBACK_HOLDOUT_FILE = "feedback_holdout.parquet"


# --------------------------------------------------------------------------------------
# The layer: batches -> processed rows
# --------------------------------------------------------------------------------------


def list_batches(feedback_dir: Path) -> list[Path]:
    """The complete batches of the layer, oldest first (staging folders are ignored)."""
    feedback_dir = Path(feedback_dir)
    if not feedback_dir.is_dir():
        return []
    return sorted(
        p
        for p in feedback_dir.iterdir()
        if p.is_dir() and p.name.startswith(BATCH_PREFIX) and (p / BATCH_MANIFEST).is_file()
    )


def load_feedback_layer(feedback_dir: Path, batches: Iterable[str] | None = None) -> pd.DataFrame:
    """Every product of the layer in the processed contract, latest correction winning.

    `image_path` is absolute ("" without a usable image); an extra `batch` column names the
    batch each row comes from and `product_key` identifies the product.

    Args:
        batches: only these batch names (default: all).

    Raises:
        DataError: a batch is malformed.
    """
    from rakuten_mlops.data.processed import build_processed_frame, find_usable_images
    from rakuten_mlops.data.validate import load_labelled_products

    wanted = set(batches) if batches is not None else None
    frames = []
    for batch in list_batches(feedback_dir):
        if wanted is not None and batch.name not in wanted:
            continue
        if not (batch / X_TRAIN_FILE).is_file():
            raise DataError(f"feedback batch {batch} has no {X_TRAIN_FILE}")
        if read_manifest(batch).get("products", 1) == 0:
            continue
        products = load_labelled_products(batch)
        frame = build_processed_frame(products, None, find_usable_images(batch, products))
        frame["text_origin"] = FEEDBACK_TEXT_ORIGIN
        frame["image_path"] = [
            str((batch / rel).resolve()) if rel else "" for rel in frame["image_path"]
        ]
        frame["batch"] = batch.name
        frames.append(frame)
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=object) for c in (*PROCESSED_COLUMNS, "batch", "product_key")}
        )
    layer = pd.concat(frames, ignore_index=True)
    # Products exported without an id got their index as id: they are keyed by text.
    synthetic = layer["productid"].to_numpy() == layer[INDEX_COL].to_numpy()
    layer["product_key"] = np.where(
        synthetic, "text:" + _text_keys(layer), "id:" + layer["productid"].astype(str)
    )
    return layer.drop_duplicates("product_key", keep="last").reset_index(drop=True)


def count_layer_products(feedback_dir: Path, exclude_batches: Iterable[str] = ()) -> int:
    """Products in the layer's batches not in `exclude_batches` (from the manifests)."""
    skip = set(exclude_batches)
    return sum(
        int(read_manifest(b).get("products", 0))
        for b in list_batches(feedback_dir)
        if b.name not in skip
    )


# --------------------------------------------------------------------------------------
# Merge into the training split
# --------------------------------------------------------------------------------------


@dataclass
class FeedbackMerge:
    """What `merge_feedback` did: the report `data prepare` writes and prints."""

    enabled: bool
    batches: list[str] = field(default_factory=list)
    layer_products: int = 0
    merged: int = 0
    holdout: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    replaced_train_rows: int = 0
    train_before: int = 0
    train_after: int = 0
    feedback_share: float = 0.0
    class_balance: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        if not self.merged:
            return f"feedback: nothing merged ({self.note})"
        lines = [
            f"feedback: {self.merged:,} reviewed product(s) merged into train "
            f"({self.train_before:,} -> {self.train_after:,} rows, "
            f"{self.feedback_share:.1%} feedback; {self.holdout:,} held out; "
            f"{self.replaced_train_rows:,} train row(s) replaced by their correction)",
        ]
        lines += [f"  dropped {n:,}: {why}" for why, n in sorted(self.dropped.items()) if n]
        movers = sorted(self.class_balance, key=lambda c: -abs(c["share_change"]))[:5]
        lines.append(
            "  class share moves: "
            + ", ".join(f"{c['code']} {c['share_change']:+.1%}" for c in movers)
        )
        return "\n".join(lines)


def merge_feedback(
    frames: Mapping[str, pd.DataFrame],
    layer: pd.DataFrame,
    params: FeedbackParams,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, FeedbackMerge]:
    """Add the feedback layer to the training split; every other split is left untouched.

    Guard rails, in order: products also in the validation or test split (same normalised
    text or product id) are dropped, so evaluation never sees a product trained on; a
    seeded `holdout_share` of the products is kept apart (the recent-feedback set); nothing
    is merged below `min_labels` products; at most `max_share` of the merged training split
    is feedback (newest first); a training row of the same product is replaced by its
    correction.

    Args:
        frames: the processed splits (`train`, `val`, `test`, ...).
        layer: `load_feedback_layer` output (latest correction per product, oldest first).
        params: the `data.feedback` parameters.
        seed: the split seed (the holdout depends on it and on the product only).

    Returns:
        The splits (only `train` changed), the holdout rows (processed columns, absolute
        image paths) and the report.
    """
    out = dict(frames)
    report = FeedbackMerge(
        enabled=params.enabled,
        batches=sorted(set(layer["batch"])) if "batch" in layer else [],
        layer_products=len(layer),
        train_before=len(frames["train"]),
        train_after=len(frames["train"]),
    )
    empty = layer.iloc[0:0][list(PROCESSED_COLUMNS)]
    if not params.enabled:
        report.note = "data.feedback.enabled is false"
        return out, empty, report
    if layer.empty:
        report.note = "the feedback layer is empty"
        return out, empty, report

    fb = layer.copy()
    fb_text = _text_keys(fb)
    evaluated = pd.concat([frames[s] for s in ("val", "test") if s in frames], ignore_index=True)
    leak = fb_text.isin(set(_text_keys(evaluated))) | fb["productid"].isin(
        set(evaluated["productid"])
    )
    report.dropped["also in the val or test split"] = int(leak.sum())
    fb, fb_text = fb[~leak.to_numpy()], fb_text[~leak.to_numpy()]

    hold = np.array([_unit_hash(seed, key) < params.holdout_share for key in fb["product_key"]])
    holdout = fb[hold][list(PROCESSED_COLUMNS)].reset_index(drop=True)
    report.holdout = len(holdout)
    fb, fb_text = fb[~hold], fb_text[~hold]

    if len(fb) < max(params.min_labels, 1):
        report.note = (
            f"{len(fb)} usable feedback product(s), fewer than data.feedback.min_labels "
            f"({params.min_labels})"
        )
        return out, holdout, report

    train = frames["train"]
    same = _text_keys(train).isin(set(fb_text)) | train["productid"].isin(set(fb["productid"]))
    base = train[~same.to_numpy()]
    cap = math.floor(params.max_share / (1.0 - params.max_share) * len(base))
    if len(fb) > cap:
        report.dropped[f"over the {params.max_share:.0%} cap (oldest first)"] = len(fb) - cap
        fb = fb.iloc[len(fb) - cap :] if cap else fb.iloc[0:0]
    # Only replace the training rows whose correction is actually merged.
    same = _text_keys(train).isin(set(_text_keys(fb))) | train["productid"].isin(
        set(fb["productid"])
    )
    base = train[~same.to_numpy()]
    merged = pd.concat([base, fb[list(PROCESSED_COLUMNS)]], ignore_index=True)
    out["train"] = merged.astype(train.dtypes.to_dict())
    report.merged = len(fb)
    report.replaced_train_rows = int(same.sum())
    report.train_after = len(merged)
    report.feedback_share = len(fb) / len(merged) if len(merged) else 0.0
    report.class_balance = class_balance_change(train[TARGET_COL], merged[TARGET_COL])
    return out, holdout, report


def count_classes(labels: pd.Series) -> dict[int, int]:
    """Rows per class code, sorted by code."""
    counts = labels.value_counts().sort_index()
    return {
        int(code): int(n)
        for code, n in zip(counts.index.to_numpy(dtype="int64"), counts.to_numpy(), strict=True)
    }


def class_balance_change(before: pd.Series, after: pd.Series) -> list[dict[str, Any]]:
    """Per class: counts and shares before / after, and the change of share."""
    b, a = before.value_counts(), after.value_counts()
    rows = []
    for code in sorted(set(b.index) | set(a.index)):
        nb, na = int(b.get(code, 0)), int(a.get(code, 0))
        sb = nb / len(before) if len(before) else 0.0
        sa = na / len(after) if len(after) else 0.0
        rows.append(
            {
                "code": int(code),
                "before": nb,
                "after": na,
                "share_before": round(sb, 6),
                "share_after": round(sa, 6),
                "share_change": round(sa - sb, 6),
            }
        )
    return rows


def processed_image_path(absolute: str, raw_dir: Path) -> str:
    """A feedback image path as stored in the processed layer: relative to the raw dir."""
    if not absolute:
        return ""
    return PurePosixPath(Path(os.path.relpath(absolute, Path(raw_dir).resolve()))).as_posix()


def _text_keys(frame: pd.DataFrame) -> pd.Series:
    from rakuten_mlops.features.text import normalize_for_dedup

    keys = [
        normalize_for_dedup(str(d or ""), str(s or ""))
        for d, s in zip(frame["designation"], frame["description"], strict=True)
    ]
    series = pd.Series(keys, index=frame.index, dtype=object)
    # An empty key matches nothing (it is not a product identity).
    return series.where(series.ne(""), "#" + frame[INDEX_COL].astype(str))


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00holdout\x00{key}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big") / float(1 << 56)


def read_manifest(batch: Path) -> dict[str, Any]:
    try:
        data = json.loads((batch / BATCH_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"unreadable feedback batch manifest {batch / BATCH_MANIFEST}: {exc}"
        ) from exc
    return data if isinstance(data, dict) else {}
