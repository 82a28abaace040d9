"""A recording stand-in of the CLI, shared by the Airflow DAG and Prefect flow tests."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from factories import make_products


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


def fill_inbox(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A batch folder whose inbox holds a good CSV (2 products), a bad one and a non-CSV."""
    batch = tmp_path / "batch"
    inbox = batch / "inbox"
    inbox.mkdir(parents=True)
    products = make_products(2, seed=5, image_dir=tmp_path).set_index("index").rename_axis(None)
    products[["designation", "description", "productid", "imageid"]].to_csv(inbox / "good.csv")
    (inbox / "bad.csv").write_text("title,price\nTente,12\n", encoding="utf-8")
    (inbox / "notes.txt").write_text("not a CSV: left alone", encoding="utf-8")
    return batch, products


def assert_inbox_scored(batch: Path, products: pd.DataFrame) -> None:
    """good.csv predicted and done, bad.csv rejected with its reason, notes.txt left alone."""
    predictions = pd.read_csv(batch / "outbox" / "good.predictions.csv", index_col=0)
    assert list(predictions.index) == list(products.index)
    assert set(predictions["prdtypecode"]) <= {10, 1160, 1920, 2220, 2583}
    assert (batch / "done" / "good.csv").is_file()
    assert (batch / "rejected" / "bad.csv").is_file()
    reason = (batch / "rejected" / "bad.reason.txt").read_text(encoding="utf-8")
    assert "missing required column `designation`" in reason
    assert sorted(p.name for p in (batch / "inbox").iterdir()) == ["notes.txt"]
    assert not list((batch / "outbox").glob("bad*"))
