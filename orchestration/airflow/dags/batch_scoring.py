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

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task
from rakuten_common import paths, q, setting

SKIPPED = 99  # @task.bash's exit code for "skipped"


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
        batch = paths().batch
        inbox = batch / "inbox"
        claimed_dir = (
            batch
            / "processing"
            / "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "manual"))
        )
        settle_s = float(setting("rakuten_batch_settle_s"))
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
        return [str(p) for p in claimed]

    @task.bash(skip_on_exit_code=SKIPPED)
    def score_file(path: str) -> str:
        where = paths()
        source = Path(path)
        name = source.stem
        rejected, outbox, done = (where.batch / d for d in ("rejected", "outbox", "done"))
        reason = rejected / f"{name}.reason.txt"
        output = outbox / f"{name}.predictions.csv"
        model = q(setting("rakuten_batch_model"))
        return (
            f"set -uo pipefail; cd {q(where.project)}; "
            f"mkdir -p {q(rejected)} {q(outbox)} {q(done)}; "
            f"if ! {where.cli} data check-input --input {q(source)} 2> {q(reason)}.part; then "
            f"mv {q(reason)}.part {q(reason)}; mv {q(source)} {q(rejected / source.name)}; "
            f"echo rejected: $(cat {q(reason)}); exit {SKIPPED}; fi; "
            f"rm -f {q(reason)}.part; set -e; "
            f"{where.cli} predict --model {model} --input {q(source)} --output {q(output)} "
            f"--no-progress; mv {q(source)} {q(done / source.name)}; echo {q(output)}"
        )

    score_file.expand(path=claim_files())


batch_scoring()
