"""Alert rules (promtool unit tests) and a real Prometheus scraping a real service.

The second test starts `rakuten-mlops serve` on a tiny model, the monitoring gauges on a
second target (the collector the service registers, on the same database), and a real
Prometheus with the project's scrape config and rules; then every alert expression and every
Grafana panel query is evaluated through Prometheus' HTTP API.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from promql import PROMETHEUS_DIR, alert_rules, dashboard_queries
from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.monitoring.exporter import register_monitoring_metrics
from rakuten_mlops.monitoring.prometheus_config import render_prometheus_config
from service_records import add_drift_run
from service_testing import ServerProcess, start_serve_process


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make system-deps` (scripts/install-system-deps.sh)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_and_rules_pass_promtool() -> None:
    promtool = _tool("promtool")
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_rule_has_a_unit_test_and_they_pass() -> None:
    promtool = _tool("promtool")
    test_file = PROMETHEUS_DIR / "tests" / "alerts_test.yml"
    tested = {
        case["alertname"]
        for test in yaml.safe_load(test_file.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names == tested, f"rules without a firing test case: {sorted(names - tested)}"
    assert names >= {
        "RakutenServiceDown",
        "RakutenHighErrorRate",
        "RakutenHighLatencyP99",
        "RakutenDataDrift",
        "RakutenOnlineAccuracyDrop",
        "RakutenNeedsReviewShareHigh",
        "RakutenNoPredictions",
        "RakutenModelReloadFailed",
    }
    run = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def _wait_for(url: str, timeout: float, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} not ready at {url} after {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def running_service(
    tmp_path: Path, database_url: str, tiny_served_model: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    """A real `rakuten-mlops serve` on a free port, serving the tiny model."""
    model = str(tiny_served_model[0])
    env = {
        "RAKUTEN_DATABASE_URL": database_url,
        "RAKUTEN_SERVE_MODEL": model,
        "RAKUTEN_LOG_FILE": "",
        "RAKUTEN_RECORD_FLUSH_MS": "50",
    }
    server = start_serve_process(env, tmp_path, "--model", model)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def monitoring_target(database_url: str) -> Iterator[str]:
    """The monitoring collector on its own HTTP port, reading the service database."""
    now = datetime.now(UTC)
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        add_drift_run(
            session,
            at=now,
            dataset_drift=True,
            drift_share=0.57,
            drifted_columns=["title_upper_share", "has_image"],
            column_scores={"title_upper_share": 1.2, "has_image": 0.3, "title_length": 0.01},
            summary={"columns": {"predicted_class": {"reference": {"10": 0.5, "2583": 0.5}}}},
        )
        session.commit()
    registry = CollectorRegistry()
    register_monitoring_metrics(engine, registry, cache_s=0)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        engine.dispose()


@pytest.fixture
def prometheus(tmp_path: Path, running_service: str, monitoring_target: str) -> Iterator[str]:
    """A real Prometheus with the project's config (1 s intervals) and alert rules."""
    config = render_prometheus_config(
        yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text()),
        config_dir=PROMETHEUS_DIR,
        targets=[running_service.url.split("//")[1], monitoring_target],
        interval="1s",
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/-/ready", 60, process, "prometheus")
        yield url
    finally:
        _stop(process)
        log.close()


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return (
        list(body["data"]["result"]) if body["data"]["resultType"] == "vector" else [body["data"]]
    )


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_real_prometheus_scrapes_the_service_and_evaluates_alerts_and_panels(
    running_service: ServerProcess, prometheus: str
) -> None:
    service, headers = running_service.url, running_service.headers

    # Real traffic in two waves (a counter's rate needs an increase between two scrapes of
    # an existing series), and one feedback.
    def predict(titles: list[str]) -> list[str]:
        ids = []
        for title in titles:
            answer = httpx.post(
                f"{service}/v1/predict", data={"designation": title}, headers=headers, timeout=30
            )
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["prediction_id"])
        return ids

    titles = ["Piscine tubulaire 4m", "Chaussettes bébé lot de 3", "Console portable"]
    ids = predict(titles)
    targets = lambda: [  # noqa: E731
        t
        for t in httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"][
            "activeTargets"
        ]
        if t["health"] == "up"
    ]
    _until(lambda: len(targets()) == 2, 30, "both targets up")
    _until(lambda: _query(prometheus, "rakuten_predictions_total"), 30, "the first scrape")
    predict(titles * 2)
    feedback = httpx.post(
        f"{service}/v1/feedback",
        json={"prediction_id": ids[0], "prdtypecode": 2583},
        headers=headers,
        timeout=10,
    )
    assert feedback.status_code < 300, feedback.text
    _until(
        lambda: _query(prometheus, "sum(rate(rakuten_predictions_total[1m])) > 0"),
        30,
        "a prediction rate",
    )

    for rule in alert_rules():
        _query(prometheus, rule["expr"])
    empty = []
    for uid, title, expr in dashboard_queries():
        if not _query(prometheus, expr):
            empty.append(f"{uid}: {title}: {expr}")
    # Panels on traffic, model, drift and quality have data; only what this run cannot
    # produce (errors, rate limits, reloads failures, feedback-less variants...) may be empty.
    for must_have in [
        "Service up",
        "Traffic by route",
        "Models in service",
        "Drift score per column",
        "Mean confidence by variant",
        "Labels behind the online quality",
    ]:
        assert not any(f": {must_have}:" in line for line in empty), empty

    scores = {
        r["metric"]["column"]: float(r["value"][1])
        for r in _query(prometheus, "rakuten_drift_column_score")
    }
    assert scores["title_upper_share"] == pytest.approx(1.2)
    labels = _query(prometheus, "sum(rakuten_online_labels)")
    assert float(labels[0]["value"][1]) == 1.0

    def firing() -> set[str]:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    assert "RakutenDataDrift" in _until(lambda: firing() or None, 20, "the drift alert")
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    health = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert set(health) == {rule["alert"] for rule in alert_rules()}
    assert set(health.values()) == {"ok"}, health
