"""Shared helpers of the Rakuten DAGs and Prefect flows: settings, paths, the retrain decision.

Standard library only, nothing read at import time: the scheduler imports this module with
every DAG file. Listed in `.airflowignore` (it defines no DAG). The Prefect flows
(`orchestration/prefect/flows.py`) import it too: the settings' names, defaults and the
thresholds live here once for both orchestrators (Airflow reads them from its Variables,
Prefect from its own Variables of the same names).

Configuration: Airflow Variables, which Airflow also reads from `AIRFLOW_VAR_<NAME>`
environment variables (e.g. `AIRFLOW_VAR_RAKUTEN_CLI=/opt/rakuten/.venv/bin/rakuten-mlops`):

| Variable | default | meaning |
| --- | --- | --- |
| `rakuten_cli` | `rakuten-mlops` | the project's CLI (its venv, not Airflow's) |
| `rakuten_project_dir` | the worker's current directory | where the CLI runs (`params.yaml`, `data/`) |
| `rakuten_work_dir` | `<project>/reports/airflow` | JSON outputs of the runs (drift, quality, decisions) |
| `rakuten_batch_dir` | `<project>/data/batch` | `inbox/`, `processing/`, `outbox/`, `done/`, `rejected/` |
| `rakuten_batch_model` | `models:/rakuten-product-classifier@champion` | model of `batch_scoring` |
| `rakuten_batch_settle_s` | `30` | a file must be this old (seconds) to be picked up |
| `rakuten_drift_window` | `1d` | window of `monitor drift` / `monitor quality` |
| `rakuten_drift_share_max` | `0.5` | retrain when this share of the columns drift (or Evidently's verdict says drift) |
| `rakuten_quality_min_labels` | `30` | labels needed before online quality can trigger anything |
| `rakuten_quality_min_accuracy` | `0.70` | retrain when the champion's online accuracy falls below |
| `rakuten_quality_max_gap` | `0.10` | retrain when online accuracy is this far below the expected (confidence) one |

The CLI itself reads its `RAKUTEN_*` settings from the worker's environment (and the
project's `.env`): `RAKUTEN_DATABASE_URL` for `feedback export`, `RAKUTEN_SERVICE_URL` and
`RAKUTEN_SERVICE_API_KEY` for the reload, which needs an admin's API key
(`rakuten-mlops users api-key create <admin>`): the service requires a user on every route.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, str] = {
    "rakuten_cli": "rakuten-mlops",
    "rakuten_project_dir": "",
    "rakuten_work_dir": "",
    "rakuten_batch_dir": "",
    "rakuten_batch_model": "models:/rakuten-product-classifier@champion",
    "rakuten_batch_settle_s": "30",
    "rakuten_drift_window": "1d",
    "rakuten_drift_share_max": "0.5",
    "rakuten_quality_min_labels": "30",
    "rakuten_quality_min_accuracy": "0.70",
    "rakuten_quality_max_gap": "0.10",
}


def setting(name: str) -> str:
    """An Airflow Variable (or `AIRFLOW_VAR_<NAME>`), else the default above. Task-time only."""
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    return str(value) if value not in (None, "") else DEFAULTS[name]


@dataclass(frozen=True)
class Paths:
    """Where the DAGs run the CLI and keep their files."""

    cli: str
    project: Path
    work: Path
    batch: Path


Lookup = Callable[[str], str]


def paths(lookup: Lookup | None = None, orchestrator: str = "airflow") -> Paths:
    """The configured paths (task-time only), from `lookup` (default: Airflow Variables)."""
    get = lookup or setting
    project = Path(get("rakuten_project_dir") or Path.cwd()).resolve()
    work = Path(get("rakuten_work_dir") or project / "reports" / orchestrator)
    batch = Path(get("rakuten_batch_dir") or project / "data" / "batch")
    return Paths(cli=get("rakuten_cli"), project=project, work=work, batch=batch)


def q(value: object) -> str:
    """Shell-quote a value for a bash command."""
    return shlex.quote(str(value))


def run_file(kind: str, run_id: str, directory: Path) -> Path:
    """A per-run output file: same run (and its retries) -> same file."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id or "manual")
    return directory / kind / f"{safe}.json"


def json_to_file(command: str, target: Path, project: Path) -> str:
    """A bash command that runs `command` (printing JSON) into `target` atomically.

    The last line printed is the target path (the task's XCom).
    """
    part = target.with_name(f".{target.name}.part")
    return (
        f"set -euo pipefail; cd {q(project)}; mkdir -p {q(target.parent)}; "
        f"{command} > {q(part)}; mv {q(part)} {q(target)}; echo {q(target)}"
    )


# Exit code of `score_command` for a rejected input (Airflow's @task.bash skips the task on it).
SKIPPED = 99


def claim_inbox(batch: Path, run_id: str, settle_s: float) -> list[Path]:
    """Move the settled CSVs of `<batch>/inbox` into this run's `processing/<run>/` folder.

    An atomic rename: two runs never take the same file. Files this run claimed before (a
    retry) come back first; a file younger than `settle_s` is left for the next run.
    """
    inbox = batch / "inbox"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "manual"))
    claimed_dir = batch / "processing" / name
    claimed = sorted(claimed_dir.glob("*.csv")) if claimed_dir.is_dir() else []
    for path in sorted(inbox.glob("*.csv")) if inbox.is_dir() else []:
        if time.time() - path.stat().st_mtime < settle_s:
            print(f"{path.name}: still being written, left for the next run")
            continue
        claimed_dir.mkdir(parents=True, exist_ok=True)
        target = claimed_dir / path.name
        path.rename(target)
        claimed.append(target)
    print(f"{len(claimed)} file(s) to score: {[p.name for p in claimed]}")
    return claimed


def score_command(where: Paths, source: Path, model: str) -> str:
    """The bash command that checks one claimed file and predicts it.

    A bad file goes to `rejected/` with `<name>.reason.txt` and the command exits `SKIPPED`;
    a good one is predicted into `outbox/<name>.predictions.csv` (the last line printed) and
    moved to `done/`. A model failure fails the command; the file stays claimed for a retry.
    """
    name = source.stem
    rejected, outbox, done = (where.batch / d for d in ("rejected", "outbox", "done"))
    reason = rejected / f"{name}.reason.txt"
    output = outbox / f"{name}.predictions.csv"
    return (
        f"set -uo pipefail; cd {q(where.project)}; "
        f"mkdir -p {q(rejected)} {q(outbox)} {q(done)}; "
        f"if ! {where.cli} data check-input --input {q(source)} 2> {q(reason)}.part; then "
        f"mv {q(reason)}.part {q(reason)}; mv {q(source)} {q(rejected / source.name)}; "
        f"echo rejected: $(cat {q(reason)}); exit {SKIPPED}; fi; "
        f"rm -f {q(reason)}.part; set -e; "
        f"{where.cli} predict --model {q(model)} --input {q(source)} --output {q(output)} "
        f"--no-progress; mv {q(source)} {q(done / source.name)}; echo {q(output)}"
    )


def read_json(path: str | Path | None) -> Any:
    """The JSON in `path` (None when there is no such file)."""
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Thresholds:
    """When drift or online quality warrants a retraining (defaults: `DEFAULTS`)."""

    drift_share_max: float = float(DEFAULTS["rakuten_drift_share_max"])
    quality_min_labels: int = int(DEFAULTS["rakuten_quality_min_labels"])
    quality_min_accuracy: float = float(DEFAULTS["rakuten_quality_min_accuracy"])
    quality_max_gap: float = float(DEFAULTS["rakuten_quality_max_gap"])

    @classmethod
    def from_settings(cls, lookup: Lookup | None = None) -> Thresholds:
        """From `lookup` (default: the Airflow Variables; task-time only)."""
        get = lookup or setting
        return cls(
            drift_share_max=float(get("rakuten_drift_share_max")),
            quality_min_labels=int(get("rakuten_quality_min_labels")),
            quality_min_accuracy=float(get("rakuten_quality_min_accuracy")),
            quality_max_gap=float(get("rakuten_quality_max_gap")),
        )


def needs_retrain(
    drift: dict[str, Any] | None, quality: dict[str, Any] | None, limits: Thresholds
) -> tuple[bool, list[str]]:
    """Whether the drift summary or the online quality calls for a retraining, and why.

    Args:
        drift: `rakuten-mlops monitor drift --json` (`dataset_drift`, `drift_share`,
            `drifted_columns`), or None when it did not run.
        quality: `rakuten-mlops monitor quality --json` (`rows`: one per model version and
            variant with `labels`, `accuracy`, `expected_accuracy_labelled` /
            `expected_accuracy`), or None.
    """
    reasons: list[str] = []
    if drift:
        share = float(drift.get("drift_share") or 0.0)
        columns = ", ".join(map(str, drift.get("drifted_columns") or [])) or "none"
        if drift.get("dataset_drift"):
            reasons.append(f"dataset drift detected (share {share:.2f}; columns: {columns})")
            if drift.get("explanation"):
                reasons.append(f"what changed: {drift['explanation']}")
        elif share >= limits.drift_share_max:
            reasons.append(
                f"drift share {share:.2f} >= {limits.drift_share_max:.2f} (columns: {columns})"
            )
    for row in (quality or {}).get("rows") or []:
        if row.get("variant") != "champion" or row.get("shadow"):
            continue
        labels = int(row.get("labels") or 0)
        accuracy = row.get("accuracy")
        if labels < limits.quality_min_labels or accuracy is None:
            continue
        who = f"champion v{row.get('model_version')} ({labels} labels)"
        if accuracy < limits.quality_min_accuracy:
            reasons.append(
                f"{who}: online accuracy {accuracy:.3f} < {limits.quality_min_accuracy:.3f}"
            )
        expected = row.get("expected_accuracy_labelled") or row.get("expected_accuracy")
        if expected is not None and expected - accuracy >= limits.quality_max_gap:
            reasons.append(
                f"{who}: online accuracy {accuracy:.3f} is {expected - accuracy:.3f} below "
                f"the expected {expected:.3f} (>= {limits.quality_max_gap:.3f})"
            )
    return bool(reasons), reasons
