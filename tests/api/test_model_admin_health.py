"""GET /health, /ready, /metrics, /v1/model and POST /v1/admin/reload with a TestClient."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from rakuten_mlops.config import Settings
from rakuten_mlops.models.pyfunc import log_pyfunc_model
from rakuten_mlops.registry.registry import promote_version, set_challenger
from service_records import add_drift_run
from service_testing import TinyModel, app_of, wait_ready

MODEL_NAME = "rakuten-product-classifier"
CONTRACT_METRICS = (
    "rakuten_http_requests_total",
    "rakuten_http_request_duration_seconds",
    "rakuten_prediction_duration_seconds",
    "rakuten_predictions_total",
    "rakuten_prediction_confidence",
    "rakuten_predictions_with_image_total",
    "rakuten_predictions_needs_review_total",
    "rakuten_model_info",
    "rakuten_model_reloads_total",
    "rakuten_model_loaded_timestamp_seconds",
)


def test_health_ready_and_metrics(client: TestClient, jpeg_bytes: bytes) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    client.post(
        "/v1/predict",
        data={"designation": "Piscine gonflable"},
        files={"image": ("a.jpg", jpeg_bytes, "image/jpeg")},
    )
    client.post("/v1/predict", data={"designation": ""})
    text = client.get("/metrics").text
    for name in CONTRACT_METRICS:
        assert f"# HELP {name} " in text, name
    assert 'rakuten_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    assert 'rakuten_http_requests_total{method="POST",route="/v1/predict",status="422"} 1.0' in text
    assert 'rakuten_predictions_with_image_total{variant="champion"} 1.0' in text
    assert 'rakuten_model_reloads_total{result="success"} 1.0' in text
    # An unknown path is counted under one label, never under its raw path.
    client.get("/no/such/path/123")
    assert 'route="unmatched",status="404"' in client.get("/metrics").text


def test_openapi_documents_every_route_with_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/predict", "/v1/predict/batch", "/v1/feedback", "/v1/predictions", "/v1/model",
        "/v1/admin/reload", "/health", "/ready", "/metrics",
    } <= set(spec["paths"])  # fmt: skip
    form = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    schema = spec["components"]["schemas"][form["schema"]["$ref"].rsplit("/", 1)[1]]
    assert schema["properties"]["designation"]["examples"]
    assert "image" in schema["properties"] and schema["required"] == ["designation"]
    feedback = spec["components"]["schemas"]["FeedbackRequest"]
    assert feedback["examples"][0]["prdtypecode"] == 2583


def test_not_ready_until_a_model_loads(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    client = start_client(make_settings(serve_model=str(tmp_path / "missing")), ready=False)
    app_of(client).state.reload_task  # noqa: B018  (the initial load exists)
    for _ in range(200):
        ready = client.get("/ready")
        if ready.json()["status"] == "failed":
            break
    assert ready.status_code == 503
    assert "MLmodel" in ready.json()["detail"]
    predict = client.post("/v1/predict", data={"designation": "Roman"})
    assert predict.status_code == 503 and "not loaded" in predict.json()["detail"]
    assert client.get("/v1/model").status_code == 503
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("wait_s", [0.0, 60.0])
def test_start_up_can_wait_for_the_model_before_accepting_connections(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    wait_s: float,
) -> None:
    # Behind a load balancer without health checks (compose's nginx), a replica must not
    # take traffic it can only answer with 503: RAKUTEN_WAIT_FOR_MODEL_S holds the start-up
    # (hence the listening port) until the first load is over. A slow load shows the two ways.
    import time

    from rakuten_mlops.serving.prediction.model_manager import ModelManager

    slow = ModelManager.reload

    def reload_slowly(self: ModelManager) -> object:
        time.sleep(1.5)
        return slow(self)

    monkeypatch.setattr(ModelManager, "reload", reload_slowly)
    client = start_client(make_settings(wait_for_model_s=wait_s), ready=False)
    first = client.get("/ready")  # the first request the started service answers
    if wait_s:
        assert first.status_code == 200, first.text
    else:
        assert first.status_code == 503 and first.json()["status"] == "loading"


def test_failed_reload_keeps_the_old_model_and_says_why(client: TestClient, tmp_path: Path) -> None:
    before = client.get("/v1/model").json()
    app_of(client).state.settings.serve_model = str(tmp_path / "not-a-model")
    response = client.post("/v1/admin/reload", params={"wait": True})
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "failed" and "not-a-model" in body["error"]
    assert client.get("/v1/admin/reload").json()["state"] == "failed"
    assert client.get("/v1/model").json()["loaded_at"] == before["loaded_at"]
    assert client.post("/v1/predict", data={"designation": "Roman"}).status_code == 200
    assert client.get("/ready").status_code == 200
    assert 'rakuten_model_reloads_total{result="failure"} 1.0' in client.get("/metrics").text


def test_reload_in_background_answers_202(client: TestClient, tiny_model_copy: Path) -> None:
    app_of(client).state.settings.serve_model = str(tiny_model_copy)
    response = client.post("/v1/admin/reload")
    assert response.status_code == 202 and response.json()["state"] in {"running", "succeeded"}
    for _ in range(400):
        if client.get("/v1/admin/reload").json()["state"] == "succeeded":
            break
    assert client.get("/v1/model").json()["uri"] == str(tiny_model_copy)


@pytest.fixture
def registry_versions(tiny_model: TinyModel, tmp_path: Path) -> MlflowClient:
    """Two registered versions of the tiny model: v1 champion, v2 challenger."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/mlflow.db")
    example = tiny_model.test[["designation", "description"]]
    experiment = mlflow.create_experiment(
        "api-tests", artifact_location=str(tmp_path / "artifacts")
    )
    for metric in (0.71, 0.74):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_metric("test_weighted_f1", metric)
            if metric == 0.71:  # v1's evaluation has a precision-coverage curve
                mlflow.log_text(
                    "threshold,coverage,accuracy,accepted\n0.0,1.0,0.8,10\n"
                    "0.5,0.6,0.95,6\n0.99,0.0,,0\n",
                    "evaluation/accuracy_vs_coverage.csv",
                )
            log_pyfunc_model(tiny_model.classifier, example, registered_model_name=MODEL_NAME)
    client = MlflowClient()
    client.set_model_version_tag(
        MODEL_NAME, "2", "gate.reasons", "PASS: challenger weighted_f1 0.74\nINFO: no champion"
    )
    promote_version(client, MODEL_NAME, 1)
    set_challenger(client, MODEL_NAME, 2)
    return client


def test_registry_aliases_are_resolved_and_followed(
    registry_versions: MlflowClient,
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        serve_model=f"models:/{MODEL_NAME}@champion", challenger_mode="shadow", reload_poll_s=0.2
    )
    client = start_client(settings)
    model = client.get("/v1/model").json()
    assert (model["version"], model["alias"], model["name"]) == ("1", "champion", MODEL_NAME)
    assert model["metrics"]["test_weighted_f1"] == pytest.approx(0.71)
    assert model["challenger"]["version"] == "2"
    assert model["gate_reasons"] == []
    models = app_of(client).state.models
    assert models.champion.coverage_curve == [(1.0, 0.8), (0.6, 0.95)]
    assert models.challenger.coverage_curve == []  # v2's run has no evaluation files
    assert model["challenger"]["gate_reasons"] == [
        "PASS: challenger weighted_f1 0.74",
        "INFO: no champion",
    ]
    assert (
        client.post("/v1/predict", data={"designation": "Roman"}).json()["model"]["version"] == "1"
    )

    promote_version(registry_versions, MODEL_NAME, 2)  # the poller notices and reloads
    for _ in range(300):
        if client.get("/v1/model").json()["version"] == "2":
            break
        import time

        time.sleep(0.05)
    model = client.get("/v1/model").json()
    assert model["version"] == "2"
    assert model["metrics"]["test_weighted_f1"] == pytest.approx(0.74)
    assert 'rakuten_model_info{alias="champion",name="rakuten-product-classifier",' in (
        client.get("/metrics").text
    )
    wait_ready(client)


def test_metrics_export_the_latest_drift_run(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    from datetime import UTC, datetime

    client = start_client(make_settings(monitoring_cache_s=0))
    text = client.get("/metrics").text
    assert "# TYPE rakuten_drift_detected gauge" in text
    assert "\nrakuten_drift_detected " not in text  # no drift run yet: declared, no sample

    now = datetime.now(UTC)
    with app_of(client).state.session_factory() as session:
        add_drift_run(
            session,
            at=now,
            dataset_drift=True,
            drift_share=0.5,
            drifted_columns=["title_upper_share"],
            column_scores={"title_upper_share": 0.9},
        )
        session.commit()
    text = client.get("/metrics").text
    assert "\nrakuten_drift_detected 1.0" in text
    assert "\nrakuten_drift_share 0.5" in text
    assert 'rakuten_drift_column_score{column="title_upper_share"} 0.9' in text
