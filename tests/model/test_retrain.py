"""`retrain` end to end on generated data: export -> prepare -> train -> gate -> reload.

Real service records (SQLite, the contract's tables), real `prepare_dataset`, real tiny
`ProductClassifier` trainings registered in a real MLflow store; the service's reload
endpoint is a loopback HTTP server that records the calls it gets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from factories import make_products, tiny_model_params, write_raw_dataset
from rakuten_mlops.cli import app
from rakuten_mlops.config import Settings
from rakuten_mlops.training.retrain import run_retrain
from service_records import ServiceRecords

GATE = {"min_weighted_f1": 0.3, "min_macro_f1": 0.0, "max_ece": 1.0, "min_improvement": 0.0}


class ReloadRecorder(BaseHTTPRequestHandler):
    """Answers `POST /v1/admin/reload?wait=true` as the service does; records the calls."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        type(self).calls.append({"path": self.path, "key": self.headers.get("X-API-Key")})
        found = self.path == "/v1/admin/reload?wait=true"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"state": "succeeded", "champion_version": "1", "error": null}')

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def service() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    ReloadRecorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReloadRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ReloadRecorder.calls
    server.shutdown()
    server.server_close()


def write_params(path: Path, *, gate: dict[str, float] = GATE) -> Path:
    params = {
        "seed": 5,
        "data": {
            "val_size": 0.2,
            "test_size": 0.2,
            "unseen_size": 0.1,
            "seed": 5,
            "feedback": {
                "enabled": True,
                "dir": str(path.parent / "feedback"),
                "min_labels": 5,
                "min_new_labels": 10,
                "max_share": 0.4,
                "holdout_share": 0.25,
            },
        },
        "model": tiny_model_params(epochs=1),
        "gate": gate,
        "evaluate": {"latency_items": 3, "latency_batch_size": 16},
    }
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def test_retrain_loop_is_guarded_idempotent_and_reloads_on_promotion(
    tmp_path: Path, service: tuple[str, list[dict[str, Any]]]
) -> None:
    url, reload_calls = service
    raw = write_raw_dataset(tmp_path / "raw", n_per_class=30, seed=0)
    params = write_params(tmp_path / "params.yaml")
    records = ServiceRecords(tmp_path / "service.db")
    settings = Settings(reports_dir=tmp_path / "reports")
    decision_file = tmp_path / "reports" / "decision.json"

    def retrain(**kwargs: Any) -> Any:
        return run_retrain(
            settings,
            params_file=kwargs.pop("params_file", params),
            raw_dir=raw,
            processed_dir=tmp_path / "processed",
            database_url=records.url,
            decision_out=decision_file,
            service_url=url,
            api_key="s3cret",
            **kwargs,
        )

    # 1. No feedback yet: the guard stops a plain run, --force trains the first champion.
    skipped = retrain()
    assert skipped.status == "skipped" and skipped.new_labels == 0
    assert json.loads(decision_file.read_text())["status"] == "skipped"
    first = retrain(force=True)
    assert first.status == "promoted" and first.version == 1 and first.champion_after == 1
    assert first.reload is not None and first.reload["status"] == "succeeded"
    assert first.reload["champion_version"] == "1"
    assert reload_calls == [{"path": "/v1/admin/reload?wait=true", "key": "s3cret"}]

    # 2. Same data, same parameters: nothing is trained again, nothing reloaded.
    again = retrain(force=True)
    assert again.reused_run and again.version == 1 and again.status == "kept"
    assert len(reload_calls) == 1
    client = MlflowClient()
    assert len(client.search_model_versions("name = 'rakuten-product-classifier'")) == 1

    # 3. Reviewers correct 40 products: a new batch, a new version trained with them, both
    #    models scored on the held-out recent feedback; a strict gate keeps the champion.
    for _, product in make_products(8, seed=4, image_dir=tmp_path, label_noise=0.0).iterrows():
        prediction = records.add_prediction(product.to_dict(), code=10)
        records.add_feedback(prediction, int(product.prdtypecode))
    strict = write_params(tmp_path / "strict.yaml", gate={**GATE, "min_improvement": 0.5})
    kept = retrain(params_file=strict)
    assert kept.export is not None and kept.export["rows"] == 40
    assert kept.new_labels == 40
    assert kept.prepare is not None and kept.prepare["feedback"]["merged"] > 0
    assert kept.status == "kept" and kept.version == 2 and kept.champion_after == 1
    assert any(r.startswith("FAIL") for r in (kept.gate or {})["reasons"])
    scores = kept.feedback_scores or {}
    holdout = kept.prepare["feedback"]["holdout"]
    assert holdout > 0 and scores["n"] == holdout
    # The gate paired both models on the same held-out products (too few to decide here).
    paired = (kept.gate or {})["comparisons"]["reviewed"]
    assert paired["n"] == holdout and paired["champion_version"] == 1
    assert paired["challenger_correct"] == round(scores["challenger"]["accuracy"] * holdout)
    # The recent-feedback scores are the gate's own pairing, not a second scoring.
    assert scores["challenger"]["weighted_f1"] == paired["challenger_weighted_f1"]
    assert scores["champion"]["weighted_f1"] == paired["champion_weighted_f1"]
    assert any("does not decide" in r for r in (kept.gate or {})["reasons"])
    assert scores["champion"]["version"] == 1 and scores["challenger"]["version"] == 2
    assert 0.0 <= scores["challenger"]["accuracy"] <= 1.0
    assert kept.reload == {"status": "not needed", "detail": "status is kept"}
    assert len(reload_calls) == 1
    written = json.loads(decision_file.read_text())
    assert written["status"] == "kept" and written["version"] == 2
    assert len(list((decision_file.parent / "history").glob("*.json"))) == 4

    # 4. No new feedback since: skipped again; the reload step alone reads the decision.
    assert retrain(params_file=strict).status == "skipped"
    records.close()


def test_retrain_cli_writes_the_decision_and_exits_zero_when_skipped(tmp_path: Path) -> None:
    raw = write_raw_dataset(tmp_path / "raw", n_per_class=10, seed=1)
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "decision.json"
    result = CliRunner().invoke(
        app,
        [
            "retrain",
            "--params", str(params),
            "--raw-dir", str(raw),
            "--data-dir", str(tmp_path / "processed"),
            "--steps", "prepare,train",
            "--decision-out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "retrain: SKIPPED" in result.output
    decision = json.loads(out.read_text())
    assert decision["status"] == "skipped" and decision["steps"] == ["prepare", "train"]
    bad = CliRunner().invoke(app, ["retrain", "--params", str(params), "--steps", "deploy"])
    assert bad.exit_code == 1 and "unknown retrain step" in bad.output
