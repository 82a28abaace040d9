"""The Airflow DAGs, checked in their own environment (`.venv-airflow`, `make airflow-venv`).

Airflow runs in a subprocess of the Airflow venv (`airflow_runner.py`), with a throwaway
AIRFLOW_HOME and SQLite metadata database; the DAG tasks call the project's real CLI from
this venv (`batch_scoring`) or a recording stand-in of it (`drift_check`, `retrain`: the
monitoring and training commands are tested on their own).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestration_testing import assert_inbox_scored, fill_inbox, write_recording_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS = REPO_ROOT / "orchestration" / "airflow" / "dags"
RUNNER = Path(__file__).with_name("airflow_runner.py")
AIRFLOW_VENV = REPO_ROOT / ".venv-airflow"
PROJECT_CLI = Path(sys.executable).parent / "rakuten-mlops"


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of an Airflow with a migrated SQLite database (builds the venv if needed)."""
    subprocess.run(
        ["bash", "scripts/tool-venv.sh", "airflow"], cwd=REPO_ROOT, check=True, timeout=900
    )
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    migrate = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return env


def run_airflow(env: dict[str, str], *args: str, variables: dict[str, str] | None = None) -> Any:
    """Run `airflow_runner.py` in the Airflow venv; its RESULT line, parsed."""
    extra = {f"AIRFLOW_VAR_{k.upper()}": v for k, v in (variables or {}).items()}
    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), str(RUNNER), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_every_dag_imports_with_its_tasks_schedule_and_retries(
    airflow_env: dict[str, str],
) -> None:
    found = run_airflow(airflow_env, "inspect")
    assert found["import_errors"] == {}
    dags = found["dags"]
    assert set(dags) == {"drift_check", "retrain", "batch_scoring"}
    for dag_id, dag in dags.items():
        assert dag["fileloc"] == f"{dag_id}.py"  # one DAG per file
        assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dags["drift_check"]["schedule"] == "@daily"
    assert dags["retrain"]["schedule"] == "@weekly"
    assert dags["batch_scoring"]["schedule"] == "0:10:00"

    drift = dags["drift_check"]["tasks"]
    assert set(drift) == {
        "monitor_drift", "monitor_quality", "decide", "trigger_retrain", "no_retrain"
    }  # fmt: skip
    assert drift["decide"]["downstream"] == ["no_retrain", "trigger_retrain"]
    assert drift["monitor_drift"]["retries"] == 2 and drift["trigger_retrain"]["retries"] == 0

    retrain = dags["retrain"]["tasks"]
    assert list(retrain) == [
        "export_feedback", "train_and_gate", "gate_decision", "reload_service",
        "keep_champion", "report",
    ]  # fmt: skip
    assert retrain["gate_decision"]["downstream"] == ["keep_champion", "reload_service"]
    assert retrain["report"]["trigger_rule"].endswith("NONE_FAILED_MIN_ONE_SUCCESS")
    assert all(task["retries"] == 1 for task in retrain.values())
    assert dags["retrain"]["params"] == ["force", "reason"]

    scoring = dags["batch_scoring"]["tasks"]
    assert scoring["claim_files"]["downstream"] == ["score_file"]
    assert scoring["score_file"]["operator"] == "DecoratedMappedOperator"


@pytest.mark.slow
def test_batch_scoring_predicts_good_files_and_moves_bad_ones_aside(
    airflow_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    batch, products = fill_inbox(tmp_path)

    result = run_airflow(
        airflow_env,
        "test",
        "batch_scoring",
        variables={
            "rakuten_cli": str(PROJECT_CLI),
            "rakuten_project_dir": str(tmp_path),
            "rakuten_batch_dir": str(batch),
            "rakuten_batch_model": str(tiny_model_dir),
            "rakuten_batch_settle_s": "0",
        },
    )

    assert result["state"] == "success"
    assert result["tasks"] == {
        "claim_files": "success",
        "score_file[0]": "skipped",  # bad.csv
        "score_file[1]": "success",  # good.csv
    }
    assert_inbox_scored(batch, products)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "branch"), [("promoted", "reload_service"), ("kept", "keep_champion")]
)
def test_retrain_dag_follows_the_gate_decision(
    airflow_env: dict[str, str], tmp_path: Path, status: str, branch: str
) -> None:
    log = tmp_path / "calls.log"
    cli = write_recording_cli(tmp_path / "cli", log, {}, status)
    result = run_airflow(
        airflow_env,
        "test",
        "retrain",
        json.dumps({"force": True, "reason": "test"}),
        variables={"rakuten_cli": str(cli), "rakuten_project_dir": str(tmp_path)},
    )
    assert result["state"] == "success"
    other = {"reload_service", "keep_champion"} - {branch}
    assert result["tasks"][branch] == "success" and result["tasks"][other.pop()] == "skipped"
    assert result["tasks"]["report"] == "success"
    calls = log.read_text().splitlines()
    assert calls[0] == "feedback export"
    assert calls[1].startswith("retrain --steps prepare,train --force --decision-out ")
    decision_file = Path(calls[1].split("--decision-out ")[1])
    assert decision_file.parent == tmp_path / "reports" / "airflow" / "retrain"
    if status == "promoted":
        assert calls[2] == f"retrain --steps reload --decision-out {decision_file}"
        assert json.loads(decision_file.read_text())["reload"]["status"] == "succeeded"
    else:
        assert len(calls) == 2


@pytest.mark.slow
def test_drift_check_triggers_retrain_on_drift(airflow_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    drift = {"dataset_drift": True, "drift_share": 0.75, "drifted_columns": ["title_capitals"]}
    cli = write_recording_cli(tmp_path / "cli", log, drift, "kept")
    result = run_airflow(
        airflow_env,
        "test",
        "drift_check",
        variables={
            "rakuten_cli": str(cli),
            "rakuten_project_dir": str(tmp_path),
            "rakuten_drift_window": "12h",
        },
    )
    assert result["state"] == "success"
    assert result["tasks"]["trigger_retrain"] == "success"
    assert result["tasks"]["no_retrain"] == "skipped"
    assert sorted(log.read_text().splitlines()) == [
        "monitor drift --since 12h --json",
        "monitor quality --since 12h --json",
    ]
    saved = json.loads(
        next((tmp_path / "reports" / "airflow" / "drift").glob("*.json")).read_text()
    )
    assert saved == drift


def _common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rakuten_common", DAGS / "rakuten_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rakuten_common", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("drift", "quality", "expected"),
    [
        (None, None, []),
        ({"dataset_drift": False, "drift_share": 0.2}, {"rows": []}, []),
        ({"dataset_drift": True, "drift_share": 0.3, "drifted_columns": ["a"]}, None, ["drift"]),
        ({"dataset_drift": False, "drift_share": 0.6}, None, ["drift share 0.60"]),
        # Too few labels: the online accuracy says nothing yet.
        (None, {"rows": [{"variant": "champion", "labels": 5, "accuracy": 0.1}]}, []),
        (
            None,
            {"rows": [{"variant": "champion", "model_version": "3", "labels": 50,
                       "accuracy": 0.62, "expected_accuracy_labelled": 0.80}]},
            ["online accuracy 0.620 < 0.700", "0.180 below the expected 0.800"],
        ),
        # The challenger's quality is the gate's business, not a reason to retrain.
        (None, {"rows": [{"variant": "challenger", "labels": 80, "accuracy": 0.2}]}, []),
    ],
)  # fmt: skip
def test_retrain_decision_thresholds(
    drift: dict[str, Any] | None, quality: dict[str, Any] | None, expected: list[str]
) -> None:
    common = _common()
    retrain, reasons = common.needs_retrain(drift, quality, common.Thresholds())
    assert retrain is bool(expected)
    assert len(reasons) == len(expected)
    for reason, fragment in zip(reasons, expected, strict=True):
        assert fragment in reason
