"""`rakuten-mlops simulate traffic` against a real, secured `serve` process.

The simulation authenticates with `RAKUTEN_SERVICE_API_KEY` (a reviewer's key made with the
users CLI), so its feedback is stored under that reviewer; and the service's per-key predict
limit (RAKUTEN_RATE_LIMIT_PREDICT) answers 429 with `Retry-After`, which the simulation
waits out and sends again: no product is lost to the limit.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import select

from rakuten_mlops.db.models import Feedback, Prediction
from rakuten_mlops.db.session import make_engine, make_session_factory
from security_testing import SECURITY_ENV
from service_testing import CLI, ServerProcess, TinyModel, cli_api_key


def test_simulation_authenticates_and_waits_out_the_rate_limit(
    start_server: Callable[..., ServerProcess], tiny_model: TinyModel, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path}/service.db"
    server = start_server(
        {
            "RAKUTEN_DATABASE_URL": database_url,
            "RAKUTEN_SERVE_MODEL": str(tiny_model.path),
            "RAKUTEN_LOG_FILE": "",
            "RAKUTEN_NUM_THREADS": "1",
            "RAKUTEN_RECORD_FLUSH_MS": "50",
            "RAKUTEN_RATE_LIMIT_PREDICT": "3/5 seconds",  # 5 products: one wait at least
        }
    )
    key = cli_api_key(database_url, tmp_path, "sim", role="reviewer")
    products = tiny_model.test.head(5).set_index("index")
    products[["designation", "description", "productid", "imageid"]].to_csv(tmp_path / "X.csv")
    products[["prdtypecode"]].to_csv(tmp_path / "Y.csv")
    images = Path(next(p for p in tiny_model.test["image_path"] if p)).parent
    env = {
        **os.environ,
        "RAKUTEN_ENV": "test",
        **SECURITY_ENV,
        "RAKUTEN_SERVICE_URL": server.url,
        "RAKUTEN_SERVICE_API_KEY": key,
    }
    run = subprocess.run(
        [
            str(CLI), "simulate", "traffic", "--input", str(tmp_path / "X.csv"),
            "--labels", str(tmp_path / "Y.csv"), "--images", str(images), "--limit", "5",
            "--rate", "100", "--feedback-share", "1", "--max-seconds", "60",
            "--summary-out", str(tmp_path / "summary.json"),
        ],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sent"] == summary["ok"] == 5 and summary["errors"] == 0, summary
    assert summary["statuses"] == {"200": 5}
    assert summary["rate_limited"] >= 1 and 0 < summary["rate_limited_wait_s"] <= 10
    assert summary["feedback_ok"] == summary["feedback_sent"] == 5
    assert "rate limited" in run.stdout and "RAKUTEN_RATE_LIMIT_PREDICT" in run.stdout

    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    assert 'rakuten_rate_limited_total{route="/v1/predict"}' in metrics
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            feedback = list(session.scalars(select(Feedback.username)))
            predicted = list(session.scalars(select(Prediction.username)))
    finally:
        engine.dispose()
    assert feedback == ["sim"] * 5  # a reviewer's corrections: the export trusts them
    assert set(predicted) == {"sim"}
