"""The drift and quality gauges, read from a real service database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.monitoring.exporter import (
    LatestDrift,
    MonitoringCollector,
    MonitoringState,
    register_monitoring_metrics,
)
from service_records import add_drift_run

CONTRACT_NAMES = {
    "rakuten_drift_detected",
    "rakuten_drift_share",
    "rakuten_drift_column_score",
    "rakuten_drift_last_run_timestamp_seconds",
    "rakuten_online_weighted_f1",
    "rakuten_online_labels",
    "rakuten_expected_accuracy",
    "rakuten_estimated_weighted_f1",
    "rakuten_estimated_weighted_f1_low",
}


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _add_drift_run(url: str, *, drift: bool, at: datetime) -> None:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        add_drift_run(
            session,
            at=at,
            dataset_drift=drift,
            drift_share=0.6 if drift else 0.1,
            drifted_columns=["title_upper_share"] if drift else [],
            column_scores={"title_upper_share": 0.8, "title_length": 0.02},
            summary={
                "columns": {"predicted_class": {"reference": {"10": 0.25, "2583": 0.75}}},
                "modalities": {
                    "text": {"compared": 10, "drifted": ["title_upper_share"], "drift_share": 0.1}
                },
                "affected_classes": [{"code": 2583, "name": "Piscine", "change": -0.3}],
            },
            current_rows=500,
        )
        session.commit()
    engine.dispose()


def test_gauges_from_the_latest_drift_run_and_rolling_quality(
    database_url: str, store_predictions
) -> None:
    now = datetime.now(UTC)
    _add_drift_run(database_url, drift=False, at=now - timedelta(days=2))
    _add_drift_run(database_url, drift=True, at=now - timedelta(hours=1))
    products = pd.DataFrame(
        {
            "designation": [f"p{i}" for i in range(50)],
            "prdtypecode": [10] * 40 + [40] * 10,
            "confidence": 0.7,
            "true_code": [10.0] * 20 + [float("nan")] * 30,
        }
    )
    store_predictions(products, version="3")
    # Outside the 7-day window: not counted.
    store_predictions(products, version="2", at=now - timedelta(days=9))

    registry = CollectorRegistry()
    engine = make_engine(database_url)
    register_monitoring_metrics(engine, registry, cache_s=0)
    samples = _samples(registry)
    engine.dispose()

    assert {name for name, _ in samples} >= CONTRACT_NAMES
    assert samples[("rakuten_drift_detected", ())] == 1.0
    assert samples[("rakuten_drift_share", ())] == pytest.approx(0.6)
    assert samples[("rakuten_drift_column_score", (("column", "title_upper_share"),))] == 0.8
    stamp = samples[("rakuten_drift_last_run_timestamp_seconds", ())]
    assert stamp == pytest.approx((now - timedelta(hours=1)).timestamp(), abs=2)
    assert samples[("rakuten_drift_reference_class_share", (("prdtypecode", "2583"),))] == 0.75
    assert samples[("rakuten_drift_modality_share", (("modality", "text"),))] == 0.1
    hurt = (("category", "Piscine"), ("prdtypecode", "2583"))
    assert samples[("rakuten_drift_class_precision_change", hurt)] == pytest.approx(-0.3)
    key = (("model_version", "3"), ("variant", "champion"))
    assert samples[("rakuten_online_labels", key)] == 20
    assert samples[("rakuten_online_weighted_f1", key)] == pytest.approx(1.0)
    assert samples[("rakuten_expected_accuracy", key)] == pytest.approx(0.7)
    assert not any(dict(labels).get("model_version") == "2" for _, labels in samples)


def test_the_weighted_f1_is_estimated_from_the_stored_probabilities(
    database_url: str, store_predictions
) -> None:
    top3 = [
        {"code": 10, "name": "", "probability": 0.9},
        {"code": 40, "name": "", "probability": 0.1},
    ]
    products = pd.DataFrame(
        {"designation": [f"p{i}" for i in range(40)], "prdtypecode": 10, "confidence": 0.9}
    )
    products["top3"] = [top3] * len(products)
    store_predictions(products, version="5")
    registry = CollectorRegistry()
    engine = make_engine(database_url)
    register_monitoring_metrics(engine, registry, cache_s=0)
    samples = _samples(registry)
    engine.dispose()

    key = (("model_version", "5"), ("variant", "champion"))
    # Expected: 36 of the 40 are truly 10 (F1 72 / 76), 4 are 40 (F1 0), weighted by 36 / 40.
    expected = 36 / 40 * (72 / 76)
    assert samples[("rakuten_estimated_weighted_f1", key)] == pytest.approx(expected, abs=1e-6)
    assert samples[("rakuten_estimated_weighted_f1_low", key)] <= expected


def test_no_data_means_no_sample_but_the_metrics_are_declared(database_url: str) -> None:
    registry = CollectorRegistry()
    engine = make_engine(database_url)
    register_monitoring_metrics(engine, registry)
    text = generate_latest(registry).decode()
    engine.dispose()
    for name in CONTRACT_NAMES:
        assert f"# TYPE {name} gauge" in text
    assert "\nrakuten_drift_detected " not in text


def test_the_database_is_read_at_most_once_per_cache_period() -> None:
    now = [0.0]
    reads = []

    def load() -> MonitoringState:
        reads.append(now[0])
        if len(reads) == 2:
            raise RuntimeError("database is down")
        return MonitoringState(LatestDrift(100.0, True, 0.5, {"title_length": 0.2}), [])

    collector = MonitoringCollector(load, cache_s=30, clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(collector)
    assert reads == []  # registering does not read the database
    assert _samples(registry)[("rakuten_drift_detected", ())] == 1.0
    now[0] = 10.0
    _samples(registry)
    assert reads == [0.0]
    now[0] = 40.0
    # The read fails: the last good state is still exported, /metrics does not break.
    assert _samples(registry)[("rakuten_drift_share", ())] == 0.5
    assert reads == [0.0, 40.0]
