"""Monitoring runs: read the service database, the reference and the model, write reports.

The I/O edge of `monitoring.drift` and `monitoring.quality`, called by the `monitor`
commands (and the service's metrics exporter for `load_monitoring_state`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from rakuten_mlops.config import Settings
from rakuten_mlops.data.prepare import load_split
from rakuten_mlops.db import crud_monitoring
from rakuten_mlops.db.session import make_engine
from rakuten_mlops.errors import DataError
from rakuten_mlops.monitoring.drift import (
    CONFIDENCE,
    DriftOptions,
    check_enough_rows,
    compare_to_reference,
    vocabulary_from_model,
)
from rakuten_mlops.monitoring.quality import QualityRow, online_quality
from rakuten_mlops.schema import PROCESSED_METADATA_FILE, TARGET_COL

logger = logging.getLogger(__name__)

MONITORING_DIR = "monitoring"
REFERENCE_CACHE_DIR = "reference-predictions"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PREDICT_CHUNK = 2000


@dataclass
class DriftCheck:
    """A finished drift check: its summary, report files and database row id."""

    summary: dict[str, Any]
    html_path: Path
    json_path: Path
    run_id: int | None


# ---------------------------------------------------------------------- windows


def parse_duration(text: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w` -> timedelta.

    Raises:
        DataError: not a positive number followed by s, m, h, d or w.
    """
    match = _DURATION_RE.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise DataError(f"--since: {text!r} is not a duration such as 30m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def resolve_window(
    since: str | None,
    start: datetime | None,
    end: datetime | None,
    *,
    now: datetime | None = None,
    default_since: str = "7d",
) -> tuple[datetime, datetime]:
    """The UTC window [start, end) of a command: `--since` or `--from`/`--to`.

    Naive datetimes are taken as UTC; `--to` defaults to now, `--from` to `--to` minus
    `since` (or `default_since`).

    Raises:
        DataError: both `--since` and `--from` are given, or the window is empty.
    """
    if since is not None and start is not None:
        raise DataError("give either --since or --from/--to, not both")
    end = _as_utc(end) if end is not None else (now or datetime.now(UTC))
    if start is None:
        start = end - parse_duration(since or default_since)
    start = _as_utc(start)
    if start >= end:
        raise DataError(
            f"empty window: --from {start.isoformat()} is not before --to {end.isoformat()}"
        )
    return start, end


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---------------------------------------------------------------------- reference


def load_reference(processed_dir: Path, split: str) -> pd.DataFrame:
    """The reference products of a processed split (labels in `prdtypecode`).

    Raises:
        DataError: the split is missing or unreadable.
    """
    return load_split(processed_dir, split)


def model_identity(model: Any, uri: str) -> tuple[str, str | None]:
    """(cache key, registered version or None) of a loaded pyfunc model."""
    metadata = getattr(model, "metadata", None)
    uuid = getattr(metadata, "model_uuid", None) or hashlib.sha256(uri.encode()).hexdigest()[:16]
    version = None
    match = re.match(r"^models:/([^/@]+)(?:/(\d+)|@(.+))$", uri)
    if match and match.group(2):
        version = match.group(2)
    elif match and match.group(3):
        try:
            from mlflow import MlflowClient

            version = str(MlflowClient().get_model_version_by_alias(match[1], match[3]).version)
        except Exception:  # a version label is a nicety; the check goes on without it
            version = None
    return str(uuid), version


def reference_predictions(
    model: Any, model_key: str, processed_dir: Path, split: str, cache_dir: Path
) -> pd.DataFrame:
    """The model's predictions on a held-out split, computed once per model and data.

    Cached as Parquet under `cache_dir`, keyed by the model's uuid, the split and the
    processed layer's metadata hash; a corrupt cache file is recomputed.

    Returns:
        designation, description, has_image, prdtypecode (predicted), confidence.
    """
    metadata = Path(processed_dir) / PROCESSED_METADATA_FILE
    data_key = hashlib.sha256(metadata.read_bytes()).hexdigest()[:12] if metadata.is_file() else "x"
    path = Path(cache_dir) / f"{model_key}-{split}-{data_key}.parquet"
    if path.is_file():
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError):
            logger.warning("unreadable reference predictions %s: recomputing", path)
    frame = load_split(processed_dir, split)
    outputs = []
    for begin in range(0, len(frame), _PREDICT_CHUNK):
        chunk = frame.iloc[begin : begin + _PREDICT_CHUNK]
        model_input = chunk[["designation", "description", "image_path"]].reset_index(drop=True)
        outputs.append(pd.DataFrame(model.predict(model_input)))
    predicted = pd.concat(outputs, ignore_index=True) if outputs else pd.DataFrame()
    result = pd.DataFrame(
        {
            "designation": frame["designation"].to_numpy(),
            "description": frame["description"].to_numpy(),
            "has_image": predicted["has_image"].astype(bool).to_numpy()
            if "has_image" in predicted
            else frame["has_image"].to_numpy(),
            TARGET_COL: predicted[TARGET_COL].astype("int64").to_numpy(),
            CONFIDENCE: predicted[CONFIDENCE].astype(float).to_numpy(),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    result.to_parquet(tmp, index=False)
    tmp.replace(path)
    return result


# ---------------------------------------------------------------------- drift


def run_drift_check(
    settings: Settings,
    window: tuple[datetime, datetime],
    *,
    reference_split: str = "train",
    model_uri: str | None = None,
    out_dir: Path | None = None,
    record: bool = True,
) -> DriftCheck:
    """Compare the window's predictions with the reference, write the reports, record the run.

    Args:
        settings: database URL, processed dir, reports dir, drift thresholds.
        window: [start, end) in UTC.
        reference_split: the processed split the products are compared with.
        model_uri: the model whose vocabulary and held-out predictions complete the
            reference; None: vocabulary from the reference, classes from its labels, no
            confidence comparison.
        out_dir: where the reports go (default `<reports_dir>/monitoring`).
        record: store the run in the service database (`drift_runs`).

    Raises:
        NotEnoughRowsError: too few predictions in the window.
        DataError, ModelError, DatabaseError: unreadable inputs.
    """
    out_dir = Path(out_dir or Path(settings.reports_dir) / MONITORING_DIR)
    engine = make_engine(settings.database_url)
    try:
        current = crud_monitoring.read_database(
            engine, lambda s: crud_monitoring.production_inputs(s, *window)
        )
        check_enough_rows(len(current), settings.drift_min_rows)
        reference = load_reference(settings.processed_dir, reference_split)
        vocabulary = heldout = None
        model_version = None
        if model_uri:
            from rakuten_mlops.models.pyfunc import load_pyfunc_model
            from rakuten_mlops.tracking import set_tracking_uri

            set_tracking_uri(settings)  # models:/ URIs resolve in the configured registry
            model = load_pyfunc_model(model_uri)
            model_key, model_version = model_identity(model, model_uri)
            vocabulary = vocabulary_from_model(model)
            heldout = reference_predictions(
                model,
                model_key,
                settings.processed_dir,
                settings.drift_heldout_split,
                out_dir / REFERENCE_CACHE_DIR,
            )
        options = DriftOptions(drift_share=settings.drift_share, min_rows=settings.drift_min_rows)
        result = compare_to_reference(
            current,
            reference,
            vocabulary=vocabulary,
            heldout=heldout,
            options=options,
            window=window,
        )
        summary = {
            "status": "ok",
            **result.summary,
            "created_at": datetime.now(UTC).isoformat(),
            "reference": {
                "split": reference_split,
                "processed_dir": str(settings.processed_dir),
                "predictions": (
                    f"model predictions on the {settings.drift_heldout_split} split"
                    if heldout is not None
                    else "labels of the reference (no model given)"
                ),
                "vocabulary": "model" if vocabulary is not None else "reference (cross-fitted)",
            },
            "model": {"uri": model_uri, "version": model_version},
            "current_models": _served_versions(current),
        }
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out_dir.mkdir(parents=True, exist_ok=True)
        html_path = out_dir / f"drift-{stamp}.html"
        json_path = out_dir / f"drift-{stamp}.json"
        result.snapshot.save_html(str(html_path))
        json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        result.snapshot.save_json(str(out_dir / f"drift-{stamp}.evidently.json"))
        for path, latest in ((html_path, "drift-latest.html"), (json_path, "drift-latest.json")):
            shutil.copyfile(path, out_dir / latest)
        run_id = None
        if record:
            run_id = _record_run(
                engine, summary, window, reference_split, model_uri, html_path, json_path
            )
            summary["run_id"] = run_id
        return DriftCheck(summary, html_path, json_path, run_id)
    finally:
        engine.dispose()


def _record_run(
    engine: Engine,
    summary: dict[str, Any],
    window: tuple[datetime, datetime],
    reference_split: str,
    model_uri: str | None,
    html_path: Path,
    json_path: Path,
) -> int:
    def add(session: Any) -> int:
        run = crud_monitoring.add_drift_run(
            session,
            window_start=window[0],
            window_end=window[1],
            current_rows=summary["rows"]["current"],
            reference_rows=summary["rows"]["reference"],
            reference=reference_split,
            model_uri=model_uri,
            model_version=summary["model"]["version"],
            dataset_drift=bool(summary["dataset_drift"]),
            drift_share=float(summary["drift_share"]),
            drifted_columns=list(summary["drifted_columns"]),
            column_scores={
                name: entry["score"]
                for name, entry in summary["columns"].items()
                if entry["score"] is not None
            },
            summary=json.loads(json.dumps(summary, default=str)),
            report_html=str(html_path),
            report_json=str(json_path),
        )
        return run.id

    return crud_monitoring.read_database(engine, add, commit=True)


def _served_versions(current: pd.DataFrame) -> dict[str, int]:
    if current.empty:
        return {}
    keys = current["variant"].astype(str) + " v" + current["model_version"].fillna("?").astype(str)
    return {str(k): int(v) for k, v in keys.value_counts().items()}


# ---------------------------------------------------------------------- quality


def run_quality_check(
    settings: Settings, window: tuple[datetime, datetime], *, n_boot: int = 200
) -> list[QualityRow]:
    """Online quality per model version and variant over the window (see `quality`)."""
    engine = make_engine(settings.database_url)
    try:
        records = crud_monitoring.read_database(
            engine, lambda s: crud_monitoring.labelled_predictions(s, *window)
        )
    finally:
        engine.dispose()
    return online_quality(records, n_boot=n_boot)
