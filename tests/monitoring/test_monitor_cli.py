"""`rakuten-mlops monitor drift | quality` against a real SQLite service database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.data.prepare import load_split
from rakuten_mlops.db.models import DriftRun
from rakuten_mlops.db.session import make_engine, make_session_factory

runner = CliRunner()


@pytest.fixture
def monitoring_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, sample_processed: Path
) -> Path:
    """Settings pointing at the test database, the real sample and a temp reports folder."""
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", database_url)
    monkeypatch.setenv("RAKUTEN_PROCESSED_DIR", str(sample_processed))
    monkeypatch.setenv("RAKUTEN_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path / "reports" / "monitoring"


def _drift_runs(url: str) -> list[DriftRun]:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        runs = list(session.execute(select(DriftRun).order_by(DriftRun.id)).scalars())
    engine.dispose()
    return runs


def test_drift_of_a_capitals_feed_is_reported_and_recorded(
    monitoring_env: Path, sample_processed: Path, store_predictions, database_url: str
) -> None:
    feed = load_split(sample_processed, "unseen").head(400)
    feed = feed.assign(designation=feed["designation"].str.upper(), description="", has_image=False)
    store_predictions(feed)
    # Older predictions, outside the window, are unchanged products: they must not count.
    store_predictions(
        load_split(sample_processed, "val").head(300), at=datetime.now(UTC) - timedelta(days=3)
    )

    result = runner.invoke(app, ["monitor", "drift", "--since", "1d"])
    assert result.exit_code == 0, result.output
    assert "DRIFT" in result.output and "title_upper_share" in result.output

    summary = json.loads((monitoring_env / "drift-latest.json").read_text())
    assert summary["dataset_drift"] is True
    assert summary["rows"]["current"] == 400
    assert summary["rows"]["reference"] == len(load_split(sample_processed, "train"))
    assert "description_missing" in summary["drifted_columns"]
    assert summary["reference"]["predictions"].startswith("labels")
    assert (monitoring_env / "drift-latest.html").stat().st_size > 10_000
    runs = _drift_runs(database_url)
    assert len(runs) == 1 and runs[0].dataset_drift is True
    assert runs[0].current_rows == 400
    assert runs[0].column_scores.keys() == summary["columns"].keys()
    assert Path(runs[0].report_html).is_file()


def test_unchanged_products_are_not_drift(
    monitoring_env: Path, sample_processed: Path, store_predictions, database_url: str
) -> None:
    store_predictions(load_split(sample_processed, "unseen"))
    result = runner.invoke(app, ["monitor", "drift", "--since", "2h", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dataset_drift"] is False
    assert summary["status"] == "ok"
    assert _drift_runs(database_url)[0].dataset_drift is False


def test_too_few_predictions_is_a_message_not_an_error(
    monitoring_env: Path, sample_processed: Path, store_predictions, database_url: str
) -> None:
    store_predictions(load_split(sample_processed, "unseen").head(7))
    result = runner.invoke(app, ["monitor", "drift"])
    assert result.exit_code == 0, result.output
    assert "only 7 prediction(s) in the window" in result.output
    assert _drift_runs(database_url) == []
    as_json = runner.invoke(app, ["monitor", "drift", "--json"])
    assert json.loads(as_json.stdout)["status"] == "not_enough_rows"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "not a duration"),
        (["--since", "1d", "--from", "2026-01-01"], "either --since or --from"),
        (["--reference", "nope"], "unknown split 'nope'"),
        (["--model", "/nonexistent/model"], "no MLflow model"),
    ],
)
def test_bad_options_are_one_line_errors(
    monitoring_env: Path, sample_processed: Path, store_predictions, args: list[str], message: str
) -> None:
    store_predictions(load_split(sample_processed, "unseen").head(60))
    result = runner.invoke(app, ["monitor", "drift", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_with_the_model_the_reference_gets_its_predictions_once(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    store_predictions,
    tiny_served_model: tuple[Path, Path],
) -> None:
    from rakuten_mlops.models.pyfunc import load_pyfunc_model

    model_dir, processed = tiny_served_model
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", database_url)
    monkeypatch.setenv("RAKUTEN_PROCESSED_DIR", str(processed))
    monkeypatch.setenv("RAKUTEN_REPORTS_DIR", str(tmp_path / "reports"))
    unseen = load_split(processed, "unseen")
    unseen = pd.concat([unseen, load_split(processed, "val")], ignore_index=True)
    predicted = load_pyfunc_model(model_dir).predict(
        unseen[["designation", "description", "image_path"]]
    )
    store_predictions(
        unseen.assign(
            prdtypecode=predicted["prdtypecode"].to_numpy(),
            confidence=predicted["confidence"].to_numpy(),
        )
    )

    result = runner.invoke(app, ["monitor", "drift", "--model", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # Compared now: the confidence and the class predicted on held-out products.
    assert {"confidence", "predicted_class"} <= summary["columns"].keys()
    assert summary["reference"] == {
        **summary["reference"],
        "predictions": "model predictions on the test split",
        "vocabulary": "model",
    }
    # Same products, same model: no drift, not even on the confidence (held-out reference).
    assert summary["dataset_drift"] is False
    assert "confidence" not in summary["drifted_columns"]
    cache = list((tmp_path / "reports/monitoring/reference-predictions").glob("*.parquet"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again = runner.invoke(app, ["monitor", "drift", "--model", str(model_dir), "--json"])
    assert again.exit_code == 0, again.output
    assert cache[0].stat().st_mtime_ns == stamp


def test_quality_per_version_with_intervals(
    monkeypatch: pytest.MonkeyPatch, database_url: str, store_predictions
) -> None:
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", database_url)
    products = pd.DataFrame(
        {
            "designation": [f"produit {i}" for i in range(120)],
            "description": "",
            "has_image": False,
            "prdtypecode": [10] * 90 + [40] * 30,
            "confidence": 0.8,
            "true_code": [10.0] * 100 + [float("nan")] * 20,
        }
    )
    store_predictions(products, version="3")
    store_predictions(
        products.head(30).assign(true_code=float("nan")), version="4", variant="challenger"
    )
    result = runner.invoke(
        app, ["monitor", "quality", "--since", "1d", "--json", "--bootstrap", "50"]
    )
    assert result.exit_code == 0, result.output
    rows = {(r["model_version"], r["variant"]): r for r in json.loads(result.stdout)["rows"]}
    champion = rows[("3", "champion")]
    assert champion["predictions"] == 120 and champion["labels"] == 100
    assert champion["accuracy"] == pytest.approx(0.9)
    assert champion["accuracy_low"] < 0.9 < champion["accuracy_high"]
    assert champion["expected_accuracy"] == pytest.approx(0.8)
    assert rows[("4", "challenger")]["labels"] == 0
    text = runner.invoke(app, ["monitor", "quality", "--since", "1d"])
    assert text.exit_code == 0 and "0.900 [" in text.output
