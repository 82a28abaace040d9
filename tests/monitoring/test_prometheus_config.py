"""`monitor prometheus-config`: the project's scrape job and alert rules, aimed elsewhere.

The loop demo (scripts/loop-demo.sh) starts Prometheus with this output; promtool checks
that the rendered file and the rules it references load.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from promql import PROMETHEUS_DIR
from rakuten_mlops.cli import app
from rakuten_mlops.errors import RakutenError
from rakuten_mlops.monitoring.prometheus_config import render_prometheus_config

PRODUCTION = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())


def test_render_points_the_service_job_at_the_targets_and_keeps_the_rules() -> None:
    rendered = render_prometheus_config(
        PRODUCTION,
        config_dir=PROMETHEUS_DIR,
        targets=["127.0.0.1:18123"],
        interval="2s",
        bearer_token_file=Path("/run/token"),
    )
    job = rendered["scrape_configs"][0]
    assert job["job_name"] == "rakuten-service" and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:18123"], "labels": {"service": "rakuten-classifier"}}
    ]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/token"}
    assert rendered["global"]["scrape_interval"] == "2s"
    assert rendered["global"]["evaluation_interval"] == "2s"
    assert rendered["global"]["external_labels"] == {"project": "rakuten-mlops"}
    # The very rule file of the project, by absolute path: no copy whose rules could differ.
    assert rendered["rule_files"] == [str((PROMETHEUS_DIR / "alerts.yml").resolve())]
    # The input is left as it was.
    assert PRODUCTION["global"]["scrape_interval"] == "15s"
    assert PRODUCTION["rule_files"] == ["alerts.yml"]


def test_render_without_interval_keeps_the_production_timing() -> None:
    rendered = render_prometheus_config(
        PRODUCTION, config_dir=PROMETHEUS_DIR, targets=["localhost:9000", "127.0.0.1:8000"]
    )
    assert rendered["global"]["evaluation_interval"] == "15s"
    assert rendered["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "localhost:9000",
        "127.0.0.1:8000",
    ]
    assert "authorization" not in rendered["scrape_configs"][0]


@pytest.mark.parametrize(
    ("targets", "interval", "message"),
    [
        ([], None, "at least one target"),
        (["127.0.0.1"], None, "host:port"),
        (["http://127.0.0.1:8000"], None, "host:port"),
        (["127.0.0.1:8000"], "2 seconds", "Prometheus duration"),
        (["127.0.0.1:8000"], "0s", "Prometheus duration"),
    ],
)
def test_render_refuses_bad_targets_and_intervals(
    targets: list[str], interval: str | None, message: str
) -> None:
    with pytest.raises(RakutenError, match=message):
        render_prometheus_config(
            PRODUCTION, config_dir=PROMETHEUS_DIR, targets=targets, interval=interval
        )


def test_cli_writes_a_config_promtool_accepts(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run `make system-deps` (scripts/install-system-deps.sh)")
    token = tmp_path / "token"
    token.write_text("secret-token")
    out = tmp_path / "demo" / "prometheus.yml"
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "prometheus-config",
            "--target",
            "127.0.0.1:18123",
            "--interval",
            "2s",
            "--metrics-token-file",
            str(token),
            "--config",
            str(PROMETHEUS_DIR / "prometheus.yml"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text())
    assert written["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:18123"]
    checked = subprocess.run(
        [promtool, "check", "config", str(out)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr
    assert "rules found" in checked.stdout + checked.stderr


def test_cli_names_the_bad_option() -> None:
    result = CliRunner().invoke(
        app, ["monitor", "prometheus-config", "--target", "127.0.0.1:1", "--interval", "soon"]
    )
    assert result.exit_code != 0
    assert "interval" in result.output and "Traceback" not in result.output
