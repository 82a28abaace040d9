"""Grafana provisioning and dashboards: the structure Grafana needs, queries that parse.

Every panel query is also evaluated against a real Prometheus in test_prometheus.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from promql import dashboard_queries

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "monitoring" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def test_provisioning_declares_the_datasource_the_dashboards_use() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/rakuten.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}


def test_two_dashboards_with_unique_uids() -> None:
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert sorted(uids) == ["rakuten-model", "rakuten-service"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat", "table", "bargauge", "barchart"}
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            expr = target["expr"]
            assert "rakuten_" in expr or expr.startswith("min(up{"), expr


def test_dashboards_cover_what_operators_watch() -> None:
    text = {path.stem: path.read_text() for path in DASHBOARDS}
    for metric in (
        "rakuten_http_requests_total",
        "rakuten_http_request_duration_seconds_bucket",
        "rakuten_rate_limited_total",
    ):
        assert metric in text["rakuten-service"]
    for metric in (
        "rakuten_predictions_total",
        "rakuten_prediction_confidence",
        "needs_review",
        "rakuten_online_accuracy",
        "rakuten_expected_accuracy",
        "rakuten_drift_column_score",
        "rakuten_model_info",
        "rakuten_drift_reference_class_share",
        "rakuten_feedback_total",
    ):
        assert metric in text["rakuten-model"]


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses each query inside a recording rule (no server needed)."""
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, _, expr) in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run `make system-deps`"
    check = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "queries.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
