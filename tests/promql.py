"""The PromQL of the project's alert rules and Grafana dashboards (shared by the tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
DASHBOARDS_DIR = REPO / "monitoring" / "grafana" / "dashboards"
# Grafana's range variables, replaced as Grafana would for a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of monitoring/prometheus/alerts.yml."""
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL with Grafana variables replaced) of every panel."""
    queries = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                queries.append((dashboard["uid"], panel["title"], expr))
    return queries
