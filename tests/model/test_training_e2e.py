"""End to end through the real CLI: train -> register -> gate -> registry -> evaluate.

Generated products (`factories.write_raw_dataset`: official raw layout, real JPEGs) are
prepared with the real `prepare_dataset`, then the real `ProductClassifier` is trained
twice: a good model (`factories.tiny_model_params`) becomes champion, a deliberately
crippled one stays challenger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from factories import tiny_model_params, write_raw_dataset
from rakuten_mlops.cli import app
from rakuten_mlops.config import get_settings
from rakuten_mlops.data.prepare import load_split, prepare_dataset
from rakuten_mlops.params import EvaluationSettings
from rakuten_mlops.registry.registry import CHALLENGER, CHAMPION, get_alias_version
from rakuten_mlops.tracking import configure_tracking
from rakuten_mlops.training.train import evaluate_champion

GOOD_MODEL = tiny_model_params(epochs=2)
# Same data, a model that cannot learn: no sparse branch, a frozen-ish tiny network.
WORSE_MODEL = {
    "sparse": {"enabled": False},
    "text_nn": {
        "enabled": True,
        "embedding_dim": 2,
        "hidden_dim": 2,
        "hash_buckets": 64,
        "epochs": 1,
        "learning_rate": 1e-6,
        "min_count": 1,
    },
    "image": {"enabled": False},
}
GATE = {"min_weighted_f1": 0.5, "min_macro_f1": 0.0, "max_ece": 0.5, "min_improvement": 0.01}
EVALUATE = {"latency_items": 5, "latency_batch_size": 32}


def write_params(path: Path, model: dict[str, Any]) -> Path:
    params = {
        "seed": 7,
        "data": {"val_size": 0.2, "test_size": 0.2, "unseen_size": 0.0, "seed": 7},
        "model": model,
        "gate": GATE,
        "evaluate": EVALUATE,
    }
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture
def processed(tmp_path: Path) -> Path:
    raw = write_raw_dataset(tmp_path / "raw")
    out = tmp_path / "processed"
    prepare_dataset(raw, out, {"val_size": 0.2, "test_size": 0.2, "unseen_size": 0.0, "seed": 7})
    return out


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


def train_args(processed: Path, params: Path, metrics: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-dir",
        str(processed),
        "--params",
        str(params),
        "--metrics-out",
        str(metrics),
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_train_register_gate_and_registry_flow(processed: Path, tmp_path: Path) -> None:
    name = get_settings().model_name
    good, worse = (
        write_params(tmp_path / "good.yaml", GOOD_MODEL),
        write_params(tmp_path / "worse.yaml", WORSE_MODEL),
    )

    # 1. First model: no champion yet, passes the thresholds -> champion and challenger.
    out1 = invoke(
        train_args(processed, good, tmp_path / "m1.json", "--model-out", str(tmp_path / "model"))
    )
    assert "gate: PROMOTE" in out1
    assert "INFO: no registered model yet" in out1
    metrics1 = json.loads((tmp_path / "m1.json").read_text(encoding="utf-8"))
    assert metrics1["model_version"] == 1
    assert metrics1["gate"]["promote"] is True
    assert metrics1["test"]["weighted_f1"] >= GATE["min_weighted_f1"]
    assert set(metrics1["test"]["slices"]) >= {"with_image", "without_image", "short_title"}
    assert metrics1["test"]["latency"]["p50_ms"] > 0
    client = MlflowClient()
    assert get_alias_version(client, name, CHAMPION) == 1
    assert get_alias_version(client, name, CHALLENGER) == 1
    assert (tmp_path / "model" / "MLmodel").is_file()

    # The run holds params, curves, fingerprints, metrics and report artifacts.
    run = client.get_run(metrics1["run_id"])
    epochs = GOOD_MODEL["text_nn"]["epochs"]
    assert run.data.params["model.text_nn.epochs"] == str(epochs)
    assert run.data.params["gate.min_improvement"] == "0.01"
    assert run.data.metrics["test_weighted_f1"] == pytest.approx(metrics1["test"]["weighted_f1"])
    assert "test_branch_sparse_weighted_f1" in run.data.metrics
    assert "test_slice_text_origin_full_weighted_f1" in run.data.metrics
    assert "latency_batch_items_per_s" in run.data.metrics
    assert "duration/total" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "text_nn/train_loss")
    assert [m.step for m in history] == list(range(1, epochs + 1))
    assert len(run.data.tags["data.sha256"]) == 64
    assert run.data.tags["gate.promote"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    for expected in (
        "confusion_matrix.png",
        "calibration_curve.png",
        "accuracy_vs_coverage.png",
        "per_class_metrics.csv",
        "per_class_metrics.json",
        "model_card.md",
        "gate_decision.json",
    ):
        assert f"evaluation/{expected}" in artifacts
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train", "val", "test"}

    # 2. A worse model: compared with the champion on the same split, it stays challenger.
    out2 = invoke(train_args(processed, worse, tmp_path / "m2.json"))
    metrics2 = json.loads((tmp_path / "m2.json").read_text(encoding="utf-8"))
    assert metrics2["model_version"] == 2
    assert metrics2["gate"]["promote"] is False
    assert metrics2["champion"]["weighted_f1"] == pytest.approx(metrics1["test"]["weighted_f1"])
    assert metrics2["test"]["weighted_f1"] < metrics1["test"]["weighted_f1"]
    assert any(r.startswith("FAIL") and "vs champion" in r for r in metrics2["gate"]["reasons"])
    assert "gate: KEEP CHAMPION" in out2
    assert get_alias_version(client, name, CHAMPION) == 1
    assert get_alias_version(client, name, CHALLENGER) == 2
    assert client.get_run(metrics2["run_id"]).data.tags["gate.promote"] == "false"

    # 3. Registry commands: list, manual promote, rollback, then nothing left to roll back.
    listing = invoke(["registry", "list"])
    assert "2 version(s)" in listing
    assert metrics1["run_id"] in listing
    assert metrics2["run_id"] in listing
    assert "v2 (was v1)" not in listing
    assert "champion -> v2 (was v1)" in invoke(["registry", "promote", "2"])
    assert get_alias_version(client, name, CHAMPION) == 2
    assert "champion v2 -> v1" in invoke(["registry", "rollback"])
    assert get_alias_version(client, name, CHAMPION) == 1
    failed = CliRunner().invoke(app, ["registry", "rollback"])
    assert failed.exit_code == 1
    assert "no previous champion" in failed.output
    unknown = CliRunner().invoke(app, ["registry", "promote", "9"])
    assert unknown.exit_code == 1
    assert "has no version 9 (versions: 1, 2)" in unknown.output

    # 4. Evaluate the champion through its registry URI: same test metrics as training.
    reports = tmp_path / "reports"
    evaluation = invoke(
        [
            "evaluate",
            "--model",
            f"models:/{name}@champion",
            "--data-dir",
            str(processed),
            "--params",
            str(good),
            "--out-dir",
            str(reports),
            "--metrics-out",
            str(tmp_path / "evaluate.json"),
            "--no-latency",
        ]
    )
    assert "weighted F1" in evaluation
    evaluated = json.loads((tmp_path / "evaluate.json").read_text(encoding="utf-8"))
    assert evaluated["weighted_f1"] == pytest.approx(metrics1["test"]["weighted_f1"])
    assert evaluated["branches"]["fused_weighted_f1"] == pytest.approx(evaluated["weighted_f1"])
    assert (reports / "confusion_matrix.png").stat().st_size > 1000
    assert "## Limits" in (reports / "model_card.md").read_text(encoding="utf-8")

    # 5. Same seed, same data, same params: same model (and --no-register leaves no version,
    # and stores no model: only metrics, params and reports).
    artifacts_root = Path(os.environ["RAKUTEN_MLFLOW_ARTIFACT_ROOT"])
    models_before = sorted(artifacts_root.rglob("MLmodel"))
    assert len(models_before) == 2  # the two registered versions
    invoke(train_args(processed, good, tmp_path / "m3.json", "--no-register"))
    metrics3 = json.loads((tmp_path / "m3.json").read_text(encoding="utf-8"))
    assert metrics3["model_version"] is None
    assert sorted(artifacts_root.rglob("MLmodel")) == models_before
    run3 = client.get_run(metrics3["run_id"])
    assert run3.data.metrics["test_weighted_f1"] == pytest.approx(metrics3["test"]["weighted_f1"])
    assert {a.path for a in client.list_artifacts(run3.info.run_id)} == {"evaluation"}
    assert metrics3["test"]["weighted_f1"] == metrics1["test"]["weighted_f1"]
    assert metrics3["test"]["ece"] == pytest.approx(metrics1["test"]["ece"], abs=1e-9)
    assert len(client.search_model_versions(f"name = '{name}'")) == 2


def test_unloadable_champion_is_treated_as_absent_and_reported(
    processed: Path, tmp_path: Path
) -> None:
    configure_tracking(get_settings())
    client = MlflowClient()
    name = "broken-classifier"
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        pass
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    client.create_model_version(name, source=str(empty), run_id=run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION, "1")

    champion = evaluate_champion(client, name, load_split(processed, "test"), EvaluationSettings())
    assert champion.metrics is None and champion.version == 1
    assert champion.note is not None
    assert "champion v1 could not be evaluated" in champion.note


def test_train_reports_missing_processed_data_without_traceback(tmp_path: Path) -> None:
    params = write_params(tmp_path / "p.yaml", GOOD_MODEL)
    result = CliRunner().invoke(app, train_args(tmp_path / "nowhere", params, tmp_path / "m.json"))
    assert result.exit_code == 1
    assert "train.parquet not found" in result.output
    assert "Traceback" not in result.output
