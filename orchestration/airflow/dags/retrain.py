"""retrain (weekly and on trigger): reviewers' corrections -> new model -> gate -> reload.

1. `export_feedback`: `rakuten-mlops feedback export` (a new append-only batch, or none);
2. `train_and_gate`: `rakuten-mlops retrain --steps prepare,train` (skipped without enough
   new labels unless the run's `force` param is true; reuses a version already trained on
   the same data); writes the decision JSON of this run;
3. `gate_decision`: the gate's decision is the outcome: `reload_service` when a new
   champion was promoted, `keep_champion` otherwise (kept or skipped);
4. `reload_service`: `rakuten-mlops retrain --steps reload` (`POST /v1/admin/reload`);
5. `report`: returns the decision (XCom) and logs where the reports are.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, task
from rakuten_common import paths, q, read_json, run_file


@dag(
    dag_id="retrain",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    params={
        "force": Param(False, type="boolean", description="Train even without new labels."),
        "reason": Param("schedule", type="string", description="Why this run was started."),
    },
    tags=["rakuten", "training"],
    doc_md=__doc__,
)
def retrain() -> None:
    """Continuous training with the promotion gate as the outcome."""

    @task.bash
    def export_feedback() -> str:
        where = paths()
        return f"set -euo pipefail; cd {q(where.project)}; {where.cli} feedback export"

    @task.bash
    def train_and_gate(run_id: str | None = None, params: dict[str, Any] | None = None) -> str:
        where = paths()
        decision = run_file("retrain", run_id or "", where.work)
        force = " --force" if (params or {}).get("force") else ""
        return (
            f"set -euo pipefail; cd {q(where.project)}; mkdir -p {q(decision.parent)}; "
            f"{where.cli} retrain --steps prepare,train{force} --decision-out {q(decision)}; "
            f"echo {q(decision)}"
        )

    @task.branch
    def gate_decision(decision_path: str) -> str:
        decision = read_json(decision_path) or {}
        print(f"decision {decision_path}: {decision.get('status')}")
        for line in decision.get("reasons", []) + (decision.get("gate") or {}).get("reasons", []):
            print(f"  {line}")
        return "reload_service" if decision.get("status") == "promoted" else "keep_champion"

    @task.bash
    def reload_service(run_id: str | None = None) -> str:
        where = paths()
        decision = run_file("retrain", run_id or "", where.work)
        return (
            f"set -euo pipefail; cd {q(where.project)}; "
            f"{where.cli} retrain --steps reload --decision-out {q(decision)}"
        )

    @task(trigger_rule="none_failed_min_one_success")
    def report(run_id: str | None = None) -> dict[str, Any]:
        decision_path = run_file("retrain", run_id or "", paths().work)
        decision = read_json(decision_path) or {}
        print(f"decision: {decision_path}")
        for name, where in sorted((decision.get("report") or {}).items()):
            print(f"report {name}: {where}")
        keys = ("status", "version", "champion_before", "champion_after", "reload", "report")
        return {key: decision.get(key) for key in keys}

    decided = gate_decision(export_feedback() >> train_and_gate())
    outcome = [reload_service(), EmptyOperator(task_id="keep_champion")]
    decided >> outcome
    outcome >> report()


retrain()
