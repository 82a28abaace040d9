"""Run inside `.venv-airflow` by tests/orchestration: inspect the DAGs or run one with dag.test().

Usage: `python airflow_runner.py inspect` or `python airflow_runner.py test DAG_ID [CONF_JSON]`.
Prints one JSON line (prefixed `RESULT `) for the test to read; the environment
(AIRFLOW_HOME, DAGS_FOLDER, SQLite database) comes from the caller.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _dagbag() -> Any:
    """The DAG folder parsed as the DAG processor does (the folder is on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    return BundleDagBag(folder, bundle_path=folder, bundle_name="dags-folder")


def inspect() -> dict[str, Any]:
    """Import errors, tasks, schedules, retries and edges of every DAG."""
    bag = _dagbag()
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "fileloc": Path(dag.fileloc).name,
            "schedule": str(dag.schedule),
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "params": sorted(dag.params.keys()),
            "tasks": {
                task.task_id: {
                    "retries": task.retries,
                    "operator": type(task).__name__,
                    "downstream": sorted(task.downstream_task_ids),
                    "trigger_rule": str(task.trigger_rule),
                }
                for task in dag.tasks
            },
        }
    return {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def test(dag_id: str, conf: dict[str, Any] | None) -> dict[str, Any]:
    """Run one DAG in-process with dag.test(); every DAG of the folder is known to the DB."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    bag = _dagbag()
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, bundle_name="dags-folder", bundle_version=None)
    dag = bag.dags[dag_id]
    for task in dag.tasks:  # a failure must fail the test now, not wait for a retry
        task.retries = 0
    run = dag.test(run_conf=conf)
    states = {}
    for ti in run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state)
    return {"state": str(run.state), "run_id": run.run_id, "tasks": states}


if __name__ == "__main__":
    if sys.argv[1] == "inspect":
        result = inspect()
    else:
        result = test(sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
    print("RESULT " + json.dumps(result, default=str), flush=True)
