"""Check a CSV of new listings before batch prediction (`rakuten-mlops data check-input`).

The same reading rules as `predict` (`inference/batch.py`): official X layout, unnamed
index first, `designation` required. The whole file is parsed, so a file accepted here is
one `predict` can read to the end; the model is not needed. Used by the `batch_scoring`
DAG to move bad files aside with the reason, before any model is loaded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rakuten_mlops.errors import DataError
from rakuten_mlops.inference.batch import check_input_columns, read_input_columns


@dataclass(frozen=True)
class InputCheck:
    """What the check found in an input CSV."""

    path: Path
    rows: int
    without_text: int
    duplicated_index: int

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.path}: {self.rows:,} row(s) ready to predict; {self.without_text:,} "
            f"without any text; {self.duplicated_index:,} duplicated index value(s)"
        )


def check_input_csv(
    path: Path, *, need_image_ids: bool = False, max_rows: int | None = None
) -> InputCheck:
    """Parse the whole CSV as `predict` will and refuse what it could not predict.

    Raises:
        DataError: missing or unreadable file, no `designation` column (or no image ids
            when `need_image_ids`), a malformed row, no row at all, or more than `max_rows`.
    """
    path = Path(path)
    _, columns = read_input_columns(path)
    check_input_columns(path, columns, need_image_ids=need_image_ids)
    rows = without_text = 0
    seen: set[object] = set()
    duplicated = 0
    try:
        reader = pd.read_csv(
            path,
            index_col=0,
            chunksize=10_000,
            dtype={"designation": "string", "description": "string"},
            keep_default_na=False,
            na_values=[""],
        )
        with reader:
            for chunk in reader:
                rows += len(chunk)
                if max_rows is not None and rows > max_rows:
                    raise DataError(f"{path}: more than {max_rows:,} rows; split the file")
                text = chunk["designation"].fillna("").str.strip()
                if "description" in chunk:
                    text = text + chunk["description"].fillna("").str.strip()
                without_text += int(text.eq("").sum())
                for value in chunk.index:
                    if value in seen:
                        duplicated += 1
                    seen.add(value)
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the rows after row {rows}: {exc}") from exc
    if rows == 0:
        raise DataError(f"{path}: no product rows (header only)")
    return InputCheck(path=path, rows=rows, without_text=without_text, duplicated_index=duplicated)
