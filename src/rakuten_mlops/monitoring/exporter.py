"""Prometheus gauges of the latest drift run and the rolling online quality.

The service exposes them on its `/metrics` with the rest, so alerts and dashboards read one
source. A custom collector reads the service database when Prometheus scrapes, at most
once per `cache_s` seconds (scrapes are frequent, the numbers change daily or per label):

    from rakuten_mlops.monitoring.exporter import register_monitoring_metrics
    register_monitoring_metrics(engine, registry, settings)   # once, when the app starts

Metric names (team contract): `rakuten_drift_detected`, `rakuten_drift_share`,
`rakuten_drift_column_score{column}`, `rakuten_drift_last_run_timestamp_seconds`,
`rakuten_drift_reference_class_share{prdtypecode}` (the class mix the dashboards compare with),
`rakuten_drift_modality_share{modality}`, `rakuten_drift_class_precision_change{prdtypecode,
category}` (what drifted, and whom it hurts: `monitoring/attribution.py`),
`rakuten_online_weighted_f1{variant,model_version}`,
`rakuten_online_labels{variant,model_version}`,
`rakuten_expected_accuracy{variant,model_version}`,
`rakuten_estimated_weighted_f1{variant,model_version}` and
`rakuten_estimated_weighted_f1_low{variant,model_version}` (the weighted F1 estimated from the
calibrated probabilities of the latest predictions of the window, without labels, and the
low end of its 95 % interval: `monitoring/estimate.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from rakuten_mlops.db import crud_monitoring
from rakuten_mlops.monitoring.estimate import PerformanceEstimate, estimate_from_records
from rakuten_mlops.monitoring.quality import QualityRow, online_quality, with_window_totals

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rakuten_mlops.config import Settings

logger = logging.getLogger(__name__)

DEFAULT_CACHE_S = 30.0
# `drift.PREDICTED_CLASS`, not imported: the service must not load Evidently.
_CLASS_COLUMN = "predicted_class"
DEFAULT_QUALITY_WINDOW = timedelta(days=7)
# The performance estimate reads the latest predictions of the window, at most this many
# (enough for a +-0.02 interval; bounded work per refresh).
ESTIMATE_MAX_PREDICTIONS = 5000
ESTIMATE_DRAWS = 100


@dataclass(frozen=True)
class LatestDrift:
    """What the gauges show of the latest drift run."""

    created_at: float  # Unix time
    dataset_drift: bool
    drift_share: float
    column_scores: dict[str, float] = field(default_factory=dict)
    # Share of each predicted class in the drift reference (what "training" looks like).
    reference_class_shares: dict[str, float] = field(default_factory=dict)
    # Share of the compared columns that drifted, per modality (`attribution.MODALITIES`).
    modality_shares: dict[str, float] = field(default_factory=dict)
    # Affected classes: (code, category name) -> change of their estimated precision.
    class_precision_changes: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitoringState:
    """Everything the collector exports, read in one go."""

    drift: LatestDrift | None
    quality: list[QualityRow]
    # (variant, model version) -> the performance estimated without labels.
    estimates: dict[tuple[str, str], PerformanceEstimate] = field(default_factory=dict)


class MonitoringCollector(Collector):
    """Prometheus collector of `MonitoringState`, re-read at most every `cache_s` seconds.

    A failed read keeps serving the last good state (and logs why): a database hiccup must
    not make `/metrics` fail, and stale gauges are visible through
    `rakuten_drift_last_run_timestamp_seconds`.
    """

    def __init__(
        self,
        load_state: Callable[[], MonitoringState],
        *,
        cache_s: float = DEFAULT_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load_state = load_state
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: MonitoringState | None = None
        self._read_at: float | None = None

    def state(self) -> MonitoringState:
        """The cached state, re-read when older than `cache_s`."""
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._cache_s:
                try:
                    self._state = self._load_state()
                except Exception:  # the exporter must never break /metrics
                    logger.exception("cannot read the monitoring state; serving the last one")
                self._read_at = now
            return self._state or MonitoringState(drift=None, quality=[])

    def describe(self) -> Iterable[Metric]:
        """The metric names, without reading the database (called at registration)."""
        return _families()

    def collect(self) -> Iterable[Metric]:
        """The gauges of the (cached) state."""
        return build_metric_families(self.state())


def build_metric_families(state: MonitoringState) -> list[Metric]:
    """The gauge families of a monitoring state (no sample for what is unknown)."""
    families: list[Metric] = list(_families())
    by_name = {family.name: family for family in _as_gauges(families)}
    drift = state.drift
    if drift is not None:
        by_name["rakuten_drift_detected"].add_metric([], 1.0 if drift.dataset_drift else 0.0)
        by_name["rakuten_drift_share"].add_metric([], drift.drift_share)
        by_name["rakuten_drift_last_run_timestamp_seconds"].add_metric([], drift.created_at)
        for column, score in sorted(drift.column_scores.items()):
            by_name["rakuten_drift_column_score"].add_metric([column], score)
        for code, share in sorted(drift.reference_class_shares.items()):
            by_name["rakuten_drift_reference_class_share"].add_metric([code], share)
        for modality, share in sorted(drift.modality_shares.items()):
            by_name["rakuten_drift_modality_share"].add_metric([modality], share)
        for (code, name), change in sorted(drift.class_precision_changes.items()):
            by_name["rakuten_drift_class_precision_change"].add_metric([code, name], change)
    for row in state.quality:
        labels = [row.variant, row.model_version]
        by_name["rakuten_online_labels"].add_metric(labels, float(row.labels))
        if row.weighted_f1 is not None:
            by_name["rakuten_online_weighted_f1"].add_metric(labels, row.weighted_f1)
        if row.expected_accuracy is not None:
            by_name["rakuten_expected_accuracy"].add_metric(labels, row.expected_accuracy)
    for (variant, version), estimate in sorted(state.estimates.items()):
        labels = [variant, version]
        by_name["rakuten_estimated_weighted_f1"].add_metric(labels, estimate.estimated_weighted_f1)
        by_name["rakuten_estimated_weighted_f1_low"].add_metric(labels, estimate.ci_low)
    return families


def _as_gauges(families: list[Metric]) -> list[GaugeMetricFamily]:
    return [family for family in families if isinstance(family, GaugeMetricFamily)]


def _families() -> list[GaugeMetricFamily]:
    quality_labels = ["variant", "model_version"]
    return [
        GaugeMetricFamily(
            "rakuten_drift_detected", "1 when the latest drift run found dataset drift, else 0"
        ),
        GaugeMetricFamily(
            "rakuten_drift_share", "Share of the descriptor columns that drifted (latest run)"
        ),
        GaugeMetricFamily(
            "rakuten_drift_column_score",
            "Evidently drift score per descriptor column in the latest run (a distance, "
            "drift from 0.1 on, for windows of 1000+ products; a p-value, drift under 0.05, "
            "below)",
            labels=["column"],
        ),
        GaugeMetricFamily(
            "rakuten_drift_last_run_timestamp_seconds", "Unix time of the latest drift run"
        ),
        GaugeMetricFamily(
            "rakuten_drift_reference_class_share",
            "Share of each class in the drift reference (predicted, or labelled without a model)",
            labels=["prdtypecode"],
        ),
        GaugeMetricFamily(
            "rakuten_drift_modality_share",
            "Share of the compared columns that drifted in the latest run, per modality "
            "(text, missing fields, model answers)",
            labels=["modality"],
        ),
        GaugeMetricFamily(
            "rakuten_drift_class_precision_change",
            "Change of the estimated precision (calibrated confidence) of a predicted class "
            "whose precision fell in the latest drift run, against the model's held-out answers",
            labels=["prdtypecode", "category"],
        ),
        GaugeMetricFamily(
            "rakuten_online_weighted_f1",
            "Weighted F1 on reviewers' labels over the rolling window",
            labels=quality_labels,
        ),
        GaugeMetricFamily(
            "rakuten_online_labels",
            "Reviewers' labels behind the online quality over the rolling window",
            labels=quality_labels,
        ),
        GaugeMetricFamily(
            "rakuten_expected_accuracy",
            "Mean top-1 confidence (calibrated) of the predictions over the rolling window",
            labels=quality_labels,
        ),
        GaugeMetricFamily(
            "rakuten_estimated_weighted_f1",
            "Weighted F1 estimated from the calibrated probabilities, without labels (latest "
            "predictions of the rolling window)",
            labels=quality_labels,
        ),
        GaugeMetricFamily(
            "rakuten_estimated_weighted_f1_low",
            "Low end of the 95% interval of the estimated weighted F1",
            labels=quality_labels,
        ),
    ]


def load_monitoring_state(engine: Engine, *, quality_window: timedelta) -> MonitoringState:
    """The latest drift run and the rolling quality (point estimates), for the exporter."""
    end = datetime.now(UTC)
    start = end - quality_window

    def read(session: Any) -> MonitoringState:
        run = crud_monitoring.latest_drift_run(session)
        labelled = crud_monitoring.labelled_predictions(session, start, end, labelled_only=True)
        aggregates = crud_monitoring.prediction_aggregates(session, start, end)
        quality = with_window_totals(online_quality(labelled, n_boot=0), aggregates)
        recent = crud_monitoring.recent_top3(session, start, end, limit=ESTIMATE_MAX_PREDICTIONS)
        estimates = estimate_from_records(recent, draws=ESTIMATE_DRAWS)
        drift = None
        if run is not None:
            created = (
                run.created_at if run.created_at.tzinfo else run.created_at.replace(tzinfo=UTC)
            )
            summary = run.summary or {}
            classes = summary.get("columns", {}).get(_CLASS_COLUMN, {})
            shares = classes.get("reference") if isinstance(classes, dict) else None
            drift = LatestDrift(
                created_at=created.timestamp(),
                dataset_drift=bool(run.dataset_drift),
                drift_share=float(run.drift_share),
                column_scores={k: float(v) for k, v in (run.column_scores or {}).items()},
                reference_class_shares=(
                    {str(k): float(v) for k, v in shares.items()}
                    if isinstance(shares, dict)
                    else {}
                ),
                modality_shares={
                    str(name): float(group.get("drift_share", 0.0))
                    for name, group in (summary.get("modalities") or {}).items()
                    if isinstance(group, dict)
                },
                class_precision_changes={
                    (str(c.get("code")), str(c.get("name"))): float(c.get("change", 0.0))
                    for c in summary.get("affected_classes") or []
                    if isinstance(c, dict)
                },
            )
        return MonitoringState(drift=drift, quality=quality, estimates=estimates)

    return crud_monitoring.read_database(engine, read)


def register_monitoring_metrics(
    engine: Engine,
    registry: CollectorRegistry = REGISTRY,
    settings: Settings | None = None,
    *,
    cache_s: float | None = None,
    quality_window: timedelta | None = None,
) -> MonitoringCollector:
    """Register the monitoring gauges, read from the service database, on `registry`.

    Args:
        engine: the service database (the one `serve` writes predictions to).
        registry: the registry `/metrics` serves.
        settings: gives `monitoring_cache_s` and `quality_window_days` when the next two
            are not given.
        cache_s: seconds between two reads of the database.
        quality_window: the rolling window of the online quality.
    """
    if cache_s is None:
        cache_s = settings.monitoring_cache_s if settings is not None else DEFAULT_CACHE_S
    if quality_window is None:
        quality_window = (
            timedelta(days=settings.quality_window_days)
            if settings is not None
            else DEFAULT_QUALITY_WINDOW
        )
    window = quality_window

    collector = MonitoringCollector(
        lambda: load_monitoring_state(engine, quality_window=window), cache_s=cache_s
    )
    registry.register(collector)
    return collector
