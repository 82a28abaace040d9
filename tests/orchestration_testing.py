"""A recording stand-in of the CLI, shared by the Airflow DAG and Prefect flow tests."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any


def write_recording_cli(path: Path, log: Path, drift: dict[str, Any], status: str) -> Path:
    """A stand-in for `rakuten-mlops` that logs its arguments and answers like the real one."""
    path.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys
            args = sys.argv[1:]
            with open({str(log)!r}, "a") as out:
                out.write(" ".join(args) + "\\n")
            if args[:2] == ["monitor", "drift"]:
                print(json.dumps({drift!r}))
            elif args[:2] == ["monitor", "quality"]:
                print(json.dumps({{"rows": []}}))
            elif args[:1] == ["retrain"]:
                target = args[args.index("--decision-out") + 1]
                if "train" in args[args.index("--steps") + 1]:
                    decision = {{"status": {status!r}, "version": 4, "reasons": ["ok"],
                                "gate": {{"reasons": ["PASS: weighted_f1"]}},
                                "report": {{"mlflow_run": "run-1"}}}}
                else:
                    decision = json.load(open(target))
                    decision["reload"] = {{"status": "succeeded", "champion_version": "4"}}
                json.dump(decision, open(target, "w"))
            """
        ),
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path
