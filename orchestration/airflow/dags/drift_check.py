"""drift_check (daily): drift report + online quality; trigger `retrain` past the thresholds.

1. `monitor_drift`: `rakuten-mlops monitor drift --since <window> --json` (HTML + JSON
   report, recorded in the service database and exported as Prometheus gauges);
2. `monitor_quality`: `rakuten-mlops monitor quality --since <window> --json`;
3. `decide`: drift verdict or share, champion's online accuracy and its gap to the
   expected (confidence) accuracy, against the thresholds in Airflow Variables
   (`rakuten_common.py`);
4. `trigger_retrain` (the `retrain` DAG, with the reasons in its conf) or `no_retrain`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from rakuten_common import (
    Thresholds,
    json_to_file,
    needs_retrain,
    paths,
    q,
    read_json,
    run_file,
    setting,
)


@dag(
    dag_id="drift_check",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["rakuten", "monitoring"],
    doc_md=__doc__,
)
def drift_check() -> None:
    """Daily drift and quality check that may trigger `retrain`."""

    @task.bash
    def monitor_drift(run_id: str | None = None) -> str:
        where = paths()
        target = run_file("drift", run_id or "", where.work)
        window = q(setting("rakuten_drift_window"))
        command = f"{where.cli} monitor drift --since {window} --json"
        return json_to_file(command, target, where.project)

    @task.bash
    def monitor_quality(run_id: str | None = None) -> str:
        where = paths()
        target = run_file("quality", run_id or "", where.work)
        window = q(setting("rakuten_drift_window"))
        command = f"{where.cli} monitor quality --since {window} --json"
        return json_to_file(command, target, where.project)

    @task.branch
    def decide(drift_path: str, quality_path: str) -> str:
        retrain, reasons = needs_retrain(
            read_json(drift_path), read_json(quality_path), Thresholds.from_settings()
        )
        for reason in reasons or ["drift and online quality within the thresholds"]:
            print(f"decision: {reason}")
        return "trigger_retrain" if retrain else "no_retrain"

    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="retrain",
        conf={"reason": "drift_check {{ run_id }}"},
        wait_for_completion=False,
        retries=0,
    )
    decision = decide(monitor_drift(), monitor_quality())
    decision >> [trigger, EmptyOperator(task_id="no_retrain")]


drift_check()
