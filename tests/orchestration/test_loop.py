"""The continuous-training loop closes against a real `rakuten-mlops serve` process.

A first model (v1) is trained and made champion; the real service serves it from the
registry; simulated traffic (titles in capitals) gets the true codes back as feedback; the
feedback is exported, a new version is trained with it, the gate promotes it, the service is
told to reload, and it then answers with v2 without a restart and without a failed request.

The service is secured as in production: the traffic comes with the API key of a reviewer
made with `rakuten-mlops users create` / `users api-key create` (its feedback is trusted by
the export), the reload with an admin's key, and the predict limit is raised for the
simulation (RAKUTEN_RATE_LIMIT_PREDICT) as the README says.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from factories import tiny_model_params, write_raw_dataset
from rakuten_mlops.config import Settings
from rakuten_mlops.data.feedback import list_batches
from rakuten_mlops.simulation.traffic import apply_drift, load_traffic, simulate_traffic
from rakuten_mlops.training.retrain import reload_service, run_retrain
from security_testing import ADMIN_USERNAME
from service_testing import cli_api_key, start_serve_process

pytestmark = pytest.mark.slow


def test_feedback_from_the_service_trains_a_new_champion_the_service_reloads(
    tmp_path: Path,
) -> None:
    raw = write_raw_dataset(tmp_path / "raw", n_per_class=40, seed=0)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "seed": 3,
                "data": {
                    "val_size": 0.15,
                    "test_size": 0.15,
                    "unseen_size": 0.2,
                    "seed": 3,
                    "feedback": {
                        "enabled": True,
                        "dir": str(tmp_path / "feedback"),
                        "min_labels": 5,
                        "min_new_labels": 5,
                        "holdout_share": 0.2,
                    },
                },
                "model": tiny_model_params(epochs=1),
                # Lenient on purpose: this test is about the loop, the gate has its own tests.
                "gate": {"min_weighted_f1": 0.0, "min_macro_f1": 0.0, "max_ece": 1.0,
                         "min_improvement": -1.0},
                "evaluate": {"latency_items": 3, "latency_batch_size": 16},
            }
        ),
        encoding="utf-8",
    )  # fmt: skip
    database_url = f"sqlite:///{tmp_path}/service.db"
    processed = tmp_path / "processed"
    settings = Settings(reports_dir=tmp_path / "reports")

    def retrain(**kwargs: object) -> object:
        return run_retrain(
            settings,
            params_file=params,
            raw_dir=raw,
            processed_dir=processed,
            database_url=database_url,
            decision_out=tmp_path / "reports" / "decision.json",
            **kwargs,  # type: ignore[arg-type]
        )

    first = retrain(steps=["prepare", "train"], force=True)
    assert first.status == "promoted" and first.version == 1  # type: ignore[attr-defined]

    env = {
        "RAKUTEN_DATABASE_URL": database_url,
        "RAKUTEN_ENV": "test",
        "RAKUTEN_IMAGE_STORE_DIR": str(tmp_path / "image-store"),
        "RAKUTEN_RATE_LIMIT_PREDICT": "1000/minute",  # the simulation's pace, not 10/minute
    }
    server = start_serve_process(env, tmp_path)
    try:
        traffic_key = cli_api_key(database_url, tmp_path, "traffic-sim", role="reviewer")
        retrain_key = cli_api_key(database_url, tmp_path, ADMIN_USERNAME)  # reload: admin
        anonymous = httpx.post(f"{server.url}/v1/predict", data={"designation": "Tente"})
        assert anonymous.status_code == 401

        unseen = load_traffic(processed)
        feed = apply_drift(unseen, ["capitals"], size=len(unseen), seed=1)
        before = simulate_traffic(
            feed, server.url, rate=50, max_seconds=60, feedback_share=1.0, api_key=traffic_key
        )
        assert before.errors == 0 and before.ok == len(unseen) > 20, before.first_error
        assert before.versions == {"1": len(unseen)} and before.rate_limited == 0
        assert before.feedback_ok == before.labelled == len(unseen)

        refused = reload_service(server.url, traffic_key)  # a reviewer may not reload
        assert refused["status"] == "failed" and refused["http_status"] == 403
        assert "needs an admin's API key in RAKUTEN_SERVICE_API_KEY" in refused["detail"]

        decision = retrain(service_url=server.url, api_key=retrain_key)
        exported = decision.export  # type: ignore[attr-defined]
        assert exported["rows"] == len(unseen)
        assert 0 < exported["images"] == before.with_image  # the service's stored copies
        assert len(list_batches(tmp_path / "feedback")) == 1
        assert decision.prepare["feedback"]["merged"] > 0  # type: ignore[attr-defined]
        assert decision.status == "promoted" and decision.version == 2  # type: ignore[attr-defined]
        reload = decision.reload  # type: ignore[attr-defined]
        assert reload["status"] == "succeeded" and reload["champion_version"] == "2"

        with httpx.Client(base_url=server.url, timeout=10, headers=server.headers) as http:
            assert http.get("/v1/model").json()["version"] == "2"
        after = simulate_traffic(
            feed.head(10), server.url, rate=50, max_seconds=30, api_key=traffic_key
        )
        assert after.errors == 0 and after.versions == {"2": 10}
        assert server.process.poll() is None  # never restarted
    finally:
        server.stop()
