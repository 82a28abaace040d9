"""Run inside `.venv-prefect` by tests/orchestration: one flow under `prefect_test_harness`.

Usage: `python prefect_runner.py FLOW [PARAMS_JSON] [VARIABLES_JSON] [--retrain-deployment]`
(or `python prefect_runner.py deployments`). A temporary local Prefect API serves the run
(no server to start by hand). Prints one JSON line prefixed `RESULT `: the flow's final state,
its return value, the state of each of its task runs, and the flow runs of the API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FLOWS_DIR = Path(__file__).resolve().parents[2] / "orchestration" / "prefect"
sys.path.insert(0, str(FLOWS_DIR))


def deployments() -> dict[str, Any]:
    from serve import deployments as declared

    found = {}
    for deployment in declared():
        schedule = deployment.schedules[0].schedule
        found[deployment.name] = {
            "flow": deployment.flow_name,
            "cron": getattr(schedule, "cron", None),
            "interval_s": schedule.interval.total_seconds()
            if hasattr(schedule, "interval")
            else None,
        }
    return found


def run(
    name: str, params: dict[str, Any], variables: dict[str, str], with_deployment: bool
) -> dict[str, Any]:
    import flows
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness
    from prefect.variables import Variable

    with prefect_test_harness(server_startup_timeout=120):
        for key, value in variables.items():
            Variable.set(key, value, overwrite=True)
        if with_deployment:
            flows.retrain.to_deployment(name="retrain").apply()
        state = getattr(flows, name)(return_state=True, **params)
        result = state.result(raise_on_failure=False)
        with get_client(sync_client=True) as client:
            own = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            tasks = {run.name: run.state.name for run in client.read_task_runs(flow_run_filter=own)}
            runs = [
                {"flow": client.read_flow(run.flow_id).name, "state": run.state.name,
                 "parameters": run.parameters, "deployment": bool(run.deployment_id)}
                for run in client.read_flow_runs()
            ]  # fmt: skip
    return {
        "state": state.name,
        "result": result if isinstance(result, (dict, list, str, type(None))) else repr(result),
        "tasks": tasks,
        "flow_runs": runs,
    }


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if args[0] == "deployments":
        out = deployments()
    else:
        out = run(
            args[0],
            json.loads(args[1]) if len(args) > 1 else {},
            json.loads(args[2]) if len(args) > 2 else {},
            "--retrain-deployment" in sys.argv,
        )
    print("RESULT " + json.dumps(out, default=str))
