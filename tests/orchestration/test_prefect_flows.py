"""The Prefect flows, run in their own environment (`.venv-prefect`, `make prefect-venv`).

Each run happens in a subprocess of the Prefect venv (`prefect_runner.py`) under
`prefect_test_harness`: a temporary local Prefect API, nothing to start by hand. As for the
Airflow DAGs, `batch_scoring` calls the project's real CLI with a tiny model; `drift_check`
and `retrain` call the recording stand-in of the CLI (its commands are tested on their own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestration_testing import assert_inbox_scored, fill_inbox, write_recording_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("prefect_runner.py")
PREFECT_VENV = REPO_ROOT / ".venv-prefect"
PROJECT_CLI = Path(sys.executable).parent / "rakuten-mlops"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the Prefect venv (built if needed) with a throwaway PREFECT_HOME."""
    subprocess.run(
        ["bash", "scripts/tool-venv.sh", "prefect"], cwd=REPO_ROOT, check=True, timeout=900
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry from tests
    return env


def run_prefect(env: dict[str, str], *args: str) -> Any:
    """Run `prefect_runner.py` in the Prefect venv; its RESULT line, parsed."""
    done = subprocess.run(
        [str(PREFECT_VENV / "bin" / "python"), str(RUNNER), *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_deployments_keep_the_airflow_schedules(prefect_env: dict[str, str]) -> None:
    assert run_prefect(prefect_env, "deployments") == {
        "drift_check": {"flow": "drift_check", "cron": "0 0 * * *", "interval_s": None},
        "retrain": {"flow": "retrain", "cron": "0 0 * * 0", "interval_s": None},
        "batch_scoring": {"flow": "batch_scoring", "cron": None, "interval_s": 600.0},
    }


def test_batch_scoring_predicts_good_files_and_moves_bad_ones_aside(
    prefect_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    batch, products = fill_inbox(tmp_path)
    variables = {
        "rakuten_cli": str(PROJECT_CLI),
        "rakuten_project_dir": str(tmp_path),
        "rakuten_batch_dir": str(batch),
        "rakuten_batch_model": str(tiny_model_dir),
        "rakuten_batch_settle_s": "0",
    }

    result = run_prefect(prefect_env, "batch_scoring", "{}", json.dumps(variables))

    assert result["state"] == "Completed", result
    assert result["result"] == {
        "bad.csv": "rejected: bad.csv",
        "good.csv": str(batch / "outbox" / "good.predictions.csv"),
    }
    assert sorted(result["tasks"].values()) == ["Completed"] * 3  # claim + 2 files
    assert_inbox_scored(batch, products)


@pytest.mark.parametrize(
    ("status", "branch"), [("promoted", "reload_service"), ("kept", "keep_champion")]
)
def test_retrain_follows_the_gate_decision(
    prefect_env: dict[str, str], tmp_path: Path, status: str, branch: str
) -> None:
    log = tmp_path / "calls.log"
    cli = write_recording_cli(tmp_path / "cli", log, {}, status)
    variables = {"rakuten_cli": str(cli), "rakuten_project_dir": str(tmp_path)}
    result = run_prefect(
        prefect_env, "retrain", json.dumps({"force": True, "reason": "test"}), json.dumps(variables)
    )
    assert result["state"] == "Completed", result
    assert result["result"]["branch"] == branch
    calls = log.read_text().splitlines()
    assert calls[0] == "feedback export"
    assert calls[1].startswith("retrain --steps prepare,train --force --decision-out ")
    decision_file = Path(calls[1].split("--decision-out ")[1])
    assert decision_file.parent == tmp_path / "reports" / "prefect" / "retrain"
    assert result["result"]["decision_file"] == str(decision_file)
    if status == "promoted":
        assert calls[2] == f"retrain --steps reload --decision-out {decision_file}"
        assert result["result"]["reload"]["status"] == "succeeded"
        assert "reload_service" in " ".join(result["tasks"])
    else:
        assert len(calls) == 2
        assert not any(name.startswith("reload_service") for name in result["tasks"])


@pytest.mark.parametrize("deployed", [False, True])
def test_drift_check_starts_retrain_on_drift(
    prefect_env: dict[str, str], tmp_path: Path, deployed: bool
) -> None:
    log = tmp_path / "calls.log"
    drift = {"dataset_drift": True, "drift_share": 0.75, "drifted_columns": ["title_capitals"]}
    cli = write_recording_cli(tmp_path / "cli", log, drift, "kept")
    variables = {
        "rakuten_cli": str(cli),
        "rakuten_project_dir": str(tmp_path),
        "rakuten_drift_window": "12h",
    }
    args = ["drift_check", "{}", json.dumps(variables)]
    result = run_prefect(prefect_env, *args, *(["--retrain-deployment"] if deployed else []))
    assert result["state"] == "Completed", result
    assert result["result"]["retrain"] is True
    assert "dataset drift detected" in result["result"]["reasons"][0]
    calls = sorted(log.read_text().splitlines())
    saved = json.loads(
        next((tmp_path / "reports" / "prefect" / "drift").glob("*.json")).read_text()
    )
    assert saved == drift
    retrains = [run for run in result["flow_runs"] if run["flow"] == "retrain"]
    assert len(retrains) == 1 and retrains[0]["parameters"]["reason"].startswith("drift_check ")
    if deployed:
        # As Airflow's TriggerDagRun: a run of the deployment is created, not waited for.
        assert retrains[0]["deployment"] and retrains[0]["state"] == "Scheduled"
        assert calls == ["monitor drift --since 12h --json", "monitor quality --since 12h --json"]
    else:
        assert retrains[0]["state"] == "Completed"  # ran as a subflow with the stand-in CLI
        assert "feedback export" in calls and "monitor drift --since 12h --json" in calls


def test_drift_check_keeps_the_champion_within_the_thresholds(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    drift = {"dataset_drift": False, "drift_share": 0.2, "drifted_columns": []}
    cli = write_recording_cli(tmp_path / "cli", log, drift, "kept")
    variables = {"rakuten_cli": str(cli), "rakuten_project_dir": str(tmp_path)}
    result = run_prefect(prefect_env, "drift_check", "{}", json.dumps(variables))
    assert result["state"] == "Completed", result
    assert result["result"] == {"retrain": False, "reasons": [], "started": None}
    assert [run["flow"] for run in result["flow_runs"]] == ["drift_check"]
