"""batch_scoring (every 10 minutes): CSVs dropped in the inbox are checked and predicted.

Folders under the `rakuten_batch_dir` Variable (default `<project>/data/batch`):
`inbox/` (drop `*.csv` in the official X layout there), `processing/<run>/` (claimed by a
run), `outbox/<name>.predictions.csv` (the predictions), `done/` (inputs predicted),
`rejected/` (bad inputs, each with `<name>.reason.txt`).

1. `claim_files`: moves every settled CSV of the inbox into this run's processing folder
   (an atomic rename: two runs never take the same file; a retry takes the same files);
2. `score_file`, one mapped task per file: `rakuten-mlops data check-input` (a bad file is
   moved aside with the reason and the task is skipped), then `rakuten-mlops predict`
   with the configured model, then the input goes to `done/`. A model failure fails the
   task (and is retried); the file stays claimed for the retry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task
from rakuten_common import SKIPPED, claim_inbox, paths, score_command, setting


@dag(
    dag_id="batch_scoring",
    schedule=timedelta(minutes=10),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["rakuten", "inference"],
    doc_md=__doc__,
)
def batch_scoring() -> None:
    """Check and predict the CSVs dropped in the inbox."""

    @task
    def claim_files(run_id: str | None = None) -> list[str]:
        settle_s = float(setting("rakuten_batch_settle_s"))
        return [str(p) for p in claim_inbox(paths().batch, run_id or "manual", settle_s)]

    @task.bash(skip_on_exit_code=SKIPPED)
    def score_file(path: str) -> str:
        return score_command(paths(), Path(path), setting("rakuten_batch_model"))

    score_file.expand(path=claim_files())


batch_scoring()
