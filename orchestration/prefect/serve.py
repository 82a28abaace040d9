"""Serve the three flows with the Airflow DAGs' schedules: `make prefect-serve`.

`python orchestration/prefect/serve.py` in `.venv-prefect` registers the deployments
`drift_check/drift_check` (daily), `retrain/retrain` (weekly, and what drift_check starts)
and `batch_scoring/batch_scoring` (every 10 minutes) with the Prefect API in force
(`PREFECT_API_URL`; a local ephemeral one otherwise) and runs them until stopped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flows import batch_scoring, drift_check, retrain

# The schedules of the Airflow DAGs (@daily, @weekly, every 10 minutes), at UTC midnight.
SCHEDULES: dict[str, dict[str, Any]] = {
    "drift_check": {"cron": "0 0 * * *"},
    "retrain": {"cron": "0 0 * * 0"},
    "batch_scoring": {"interval": timedelta(minutes=10)},
}


def deployments() -> list[Any]:
    """One deployment per flow, named after it, with its schedule."""
    return [
        flow.to_deployment(name=flow.name, **SCHEDULES[flow.name])
        for flow in (drift_check, retrain, batch_scoring)
    ]


if __name__ == "__main__":
    from prefect import serve

    serve(*deployments())
