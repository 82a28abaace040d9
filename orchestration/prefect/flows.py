"""The three workflows of orchestration/airflow/dags, as Prefect flows.

Same CLI calls, same files, same thresholds and the same idempotence rules as the Airflow DAGs
(the helpers, setting names and defaults come from `rakuten_common.py`, shared by both):

- `drift_check` (daily): `monitor drift --json` and `monitor quality --json` into this run's
  files, then the retrain decision; past the thresholds it starts a `retrain` run (the
  `retrain/retrain` deployment when it exists, as Airflow's TriggerDagRun does; else as a
  subflow) with the reasons.
- `retrain` (weekly and on demand): `feedback export`, `retrain --steps prepare,train`
  writing this run's decision file, `retrain --steps reload` only when the gate promoted.
- `batch_scoring` (every 10 minutes): settled CSVs of the inbox are claimed into this run's
  `processing/` folder (an atomic rename; a retried run takes the same files back), each is
  checked (`data check-input`: a bad file goes to `rejected/` with its reason) and predicted
  (`predict`) into `outbox/`, then moved to `done/`.

Settings are Prefect Variables named as the Airflow ones (`rakuten_cli`,
`rakuten_project_dir`, `rakuten_batch_dir`, `rakuten_drift_share_max`, ...; see
`rakuten_common.DEFAULTS`). A task that fails is retried by Prefect (`retries`), with the
same run id, hence the same claimed files and decision file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.variables import Variable

# The helpers shared with the Airflow DAGs (standard library only).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "airflow" / "dags"))
from rakuten_common import (
    DEFAULTS,
    SKIPPED,
    Paths,
    Thresholds,
    claim_inbox,
    json_to_file,
    needs_retrain,
    paths,
    q,
    read_json,
    run_file,
    score_command,
)


def setting(name: str) -> str:
    """A Prefect Variable, else the default shared with Airflow."""
    value = Variable.get(name, default=None)
    return str(value) if value not in (None, "") else DEFAULTS[name]


def where() -> Paths:
    return paths(setting, orchestrator="prefect")


def run_id() -> str:
    """This flow run's id: a retried task sees the same one (same files)."""
    return str(flow_run.get_id() or "manual")


def bash(command: str, ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
    """Run a bash command, its output logged; returns (exit code, last line)."""
    logger = get_run_logger()
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        logger.info(line)
    if done.returncode not in ok:
        raise RuntimeError(f"exit code {done.returncode}: {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


# drift_check -------------------------------------------------------------------------


@task(retries=2, retry_delay_seconds=300)
def monitor(kind: str, window: str) -> str:
    """`monitor drift|quality --since WINDOW --json` into this run's file; returns its path."""
    paths_ = where()
    target = run_file(kind, run_id(), paths_.work)
    command = f"{paths_.cli} monitor {kind} --since {q(window)} --json"
    return bash(json_to_file(command, target, paths_.project))[1]


@task
def decide(drift_path: str, quality_path: str) -> tuple[bool, list[str]]:
    retrain_needed, reasons = needs_retrain(
        read_json(drift_path), read_json(quality_path), Thresholds.from_settings(setting)
    )
    for reason in reasons or ["drift and online quality within the thresholds"]:
        get_run_logger().info(f"decision: {reason}")
    return retrain_needed, reasons


@task(retries=0)
def trigger_retrain(reason: str) -> str:
    """Start `retrain` without waiting: its deployment when served, else as a subflow."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        started = run_deployment("retrain/retrain", parameters={"reason": reason}, timeout=0)
        return f"deployment run {started.id}"
    except ObjectNotFound:
        get_run_logger().info("no retrain deployment: running it as a subflow")
        retrain(reason=reason)
        return "subflow"


@flow(name="drift_check", log_prints=True)
def drift_check() -> dict[str, Any]:
    """Daily drift and quality check that may start `retrain`."""
    window = setting("rakuten_drift_window")
    drift_path = monitor.submit("drift", window)
    quality_path = monitor.submit("quality", window)
    retrain_needed, reasons = decide(drift_path.result(), quality_path.result())
    started = trigger_retrain(f"drift_check {run_id()}") if retrain_needed else None
    return {"retrain": retrain_needed, "reasons": reasons, "started": started}


# retrain -----------------------------------------------------------------------------


@task(retries=1, retry_delay_seconds=600)
def export_feedback() -> None:
    paths_ = where()
    bash(f"set -euo pipefail; cd {q(paths_.project)}; {paths_.cli} feedback export")


@task(retries=1, retry_delay_seconds=600)
def train_and_gate(force: bool) -> str:
    """`retrain --steps prepare,train` writing this run's decision file (reused by a retry)."""
    paths_ = where()
    decision = run_file("retrain", run_id(), paths_.work)
    flag = " --force" if force else ""
    bash(
        f"set -euo pipefail; cd {q(paths_.project)}; mkdir -p {q(decision.parent)}; "
        f"{paths_.cli} retrain --steps prepare,train{flag} --decision-out {q(decision)}"
    )
    return str(decision)


@task(retries=1, retry_delay_seconds=600)
def reload_service(decision: str) -> None:
    paths_ = where()
    bash(
        f"set -euo pipefail; cd {q(paths_.project)}; "
        f"{paths_.cli} retrain --steps reload --decision-out {q(decision)}"
    )


@flow(name="retrain", log_prints=True)
def retrain(force: bool = False, reason: str = "schedule") -> dict[str, Any]:
    """Continuous training with the promotion gate as the outcome."""
    print(f"retrain: {reason}")
    export_feedback()
    decision_path = train_and_gate(force)
    decision = read_json(decision_path) or {}
    print(f"decision {decision_path}: {decision.get('status')}")
    for line in decision.get("reasons", []) + (decision.get("gate") or {}).get("reasons", []):
        print(f"  {line}")
    if decision.get("status") == "promoted":
        reload_service(decision_path)
        branch = "reload_service"
    else:
        branch = "keep_champion"
    decision = read_json(decision_path) or {}
    keys = ("status", "version", "champion_before", "champion_after", "reload", "report")
    return {"branch": branch, "decision_file": decision_path, **{k: decision.get(k) for k in keys}}


# batch_scoring -----------------------------------------------------------------------


@task
def claim_files() -> list[str]:
    """Settled CSVs of the inbox, moved into this run's folder (plus those it claimed before)."""
    settle_s = float(setting("rakuten_batch_settle_s"))
    return [str(p) for p in claim_inbox(where().batch, run_id(), settle_s)]


@task(retries=2, retry_delay_seconds=120)
def score_file(path: str) -> str:
    """Check, then predict one claimed file; 'rejected: ...' or the predictions' path."""
    source = Path(path)
    command = score_command(where(), source, setting("rakuten_batch_model"))
    code, last = bash(command, ok=(0, SKIPPED))
    return last if code == 0 else f"rejected: {source.name}"


@flow(name="batch_scoring", log_prints=True)
def batch_scoring() -> dict[str, str]:
    """Check and predict the CSVs dropped in the inbox."""
    files = claim_files()
    futures = score_file.map(files)
    return {Path(f).name: future.result() for f, future in zip(files, futures, strict=True)}
