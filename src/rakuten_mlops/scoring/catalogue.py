"""Catalogue inputs and output rows shared by the local and the Spark scoring engines.

Input: CSV or Parquet files in the official X layout: the official index (the unnamed first
CSV column; in Parquet a column `index` or pandas' `__index_level_0__`), `designation`,
`description`, `productid`, `imageid`. Every cell is read as text, by both engines, so that
they see the same values. Output: one row per input row, the official index as column
`index`, the prediction contract columns, `note` (as in batch prediction) and `error` (why
a row has no prediction; empty otherwise). The model input is built and its output read by
`rakuten_mlops.inference.batch`, like `predict` and the service.
"""

from __future__ import annotations

import glob
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rakuten_mlops.errors import DataError, RakutenError
from rakuten_mlops.inference.batch import NOTE_COLUMN, predict_chunk
from rakuten_mlops.models.output import OUTPUT_DTYPES
from rakuten_mlops.schema import OUTPUT_COLUMNS

if TYPE_CHECKING:
    from rakuten_mlops.models.pyfunc import PredictFn

logger = logging.getLogger(__name__)

INDEX_COLUMN = "index"
ERROR_COLUMN = "error"
X_COLUMNS = ("designation", "description", "productid", "imageid")
# Names the official index goes by: ours, pandas' Parquet index, pandas' and Spark's CSV
# names of an unnamed first column.
INDEX_ALIASES = (INDEX_COLUMN, "__index_level_0__", "Unnamed: 0", "_c0")
SCORE_COLUMNS = (INDEX_COLUMN, *OUTPUT_COLUMNS, NOTE_COLUMN, ERROR_COLUMN)
# The output contract (models/output.py) in Arrow's types, and the nullable pandas dtypes of
# a scores file (a failed row has nulls).
_ARROW_TYPES = {
    "int64": pa.int64(),
    "object": pa.string(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
_NULLABLE = {"int64": "Int64", "float64": "float64", "bool": "boolean"}
SCORE_SCHEMA = pa.schema(
    [
        pa.field(INDEX_COLUMN, pa.int64()),
        *(pa.field(name, _ARROW_TYPES[dtype]) for name, dtype in OUTPUT_DTYPES.items()),
        pa.field(NOTE_COLUMN, pa.string()),
        pa.field(ERROR_COLUMN, pa.string()),
    ]
)
SUCCESS_MARKER = "_SUCCESS"
InputFormat = Literal["csv", "parquet"]


@dataclass(frozen=True)
class ScoreSummary:
    """What a scoring job did."""

    engine: str
    output: Path
    rows: int
    failed: int
    with_image: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Throughput of the whole job (reading, model, writing)."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        return (
            f"{self.engine}: scored {self.rows:,} rows into {self.output} in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s; {self.with_image:,} with an image, "
            f"{self.failed:,} without a prediction, see column `{ERROR_COLUMN}`)"
        )


def resolve_inputs(pattern: str | Path) -> list[Path]:
    """The input files of a path, a directory (its CSV and Parquet files) or a glob.

    Raises:
        DataError: nothing matches, or a file is neither CSV nor Parquet.
    """
    text = str(pattern)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in {".csv", ".parquet"})
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())  # noqa: PTH207 (absolute patterns)
    if not files:
        raise DataError(f"--input {text}: no CSV or Parquet file found")
    for file in files:
        input_format(file)
    return files


def input_format(path: Path) -> InputFormat:
    """`csv` or `parquet`, from the file name.

    Raises:
        DataError: another extension.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    raise DataError(f"{path}: expected a .csv or .parquet file")


def iter_input_chunks(paths: Sequence[Path], chunk_size: int) -> Iterator[pd.DataFrame]:
    """Chunks of at most `chunk_size` rows of every input, normalised by `normalise_chunk`.

    A CSV line with more fields than the header is skipped with a warning (Spark's
    DROPMALFORMED does the same); an unreadable file is an error.

    Raises:
        DataError: a file cannot be read or lacks the `designation` or index column.
    """
    for path in paths:
        try:
            if input_format(path) == "csv":
                reader = pd.read_csv(
                    path,
                    dtype=str,
                    chunksize=chunk_size,
                    keep_default_na=False,
                    na_values=[""],
                    on_bad_lines="warn",
                )
                with reader:
                    for chunk in reader:
                        yield normalise_chunk(chunk, path)
            else:
                parquet = pq.ParquetFile(path)
                for batch in parquet.iter_batches(batch_size=chunk_size):
                    table = pa.Table.from_batches([batch]).replace_schema_metadata(None)
                    yield normalise_chunk(table.to_pandas().astype("string"), path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def find_index_column(columns: Sequence[str], source: Path | str) -> str:
    """The column holding the official index.

    Raises:
        DataError: none of the known names, and no unnamed first column.
    """
    for name in INDEX_ALIASES:
        if name in columns:
            return name
    if columns and str(columns[0]).startswith("Unnamed"):
        return str(columns[0])
    raise DataError(
        f"{source}: no index column (expected an unnamed first CSV column or a column "
        f"`{INDEX_COLUMN}`); columns found: {', '.join(map(str, columns)) or 'none'}"
    )


def normalise_chunk(frame: pd.DataFrame, source: Path | str) -> pd.DataFrame:
    """The official index as nullable integers in column `index`, X columns as text or None.

    Raises:
        DataError: no index column, or no `designation` column.
    """
    columns = [str(c) for c in frame.columns]
    index_column = find_index_column(columns, source)
    if "designation" not in columns:
        raise DataError(
            f"{source}: missing required column `designation`; columns found: {', '.join(columns)}"
        )
    out = pd.DataFrame(
        {INDEX_COLUMN: pd.to_numeric(frame[index_column], errors="coerce").astype("Int64")}
    )
    for column in X_COLUMNS:
        values = frame[column] if column in columns else pd.Series(None, index=frame.index)
        out[column] = values.astype(object).where(values.notna(), None)
    return out.reset_index(drop=True)


def score_chunk(predict: PredictFn, chunk: pd.DataFrame, images_dir: Path | None) -> pd.DataFrame:
    """Output rows (`SCORE_COLUMNS`, typed for `SCORE_SCHEMA`) of one normalised chunk.

    The whole chunk is predicted at once; when the model fails on it, the chunk is split in
    halves until the failing rows are isolated: they get an `error` and no prediction, the
    others are scored normally.
    """
    chunk = chunk.reset_index(drop=True)
    parts = list(_score_rows(predict, chunk, images_dir))
    output = pd.concat(parts) if parts else _empty_rows()
    output = output.reindex(range(len(chunk)))
    output.insert(0, INDEX_COLUMN, chunk[INDEX_COLUMN].astype("Int64"))
    return _typed(output)


def _score_rows(
    predict: PredictFn, rows: pd.DataFrame, images_dir: Path | None
) -> Iterator[pd.DataFrame]:
    if rows.empty:
        return
    try:
        result = predict_chunk(predict, rows.drop(columns=[INDEX_COLUMN]), images_dir)
    except RakutenError as exc:
        if len(rows) == 1:
            failed = _empty_rows(rows.index)
            failed[ERROR_COLUMN] = str(exc)[:500]
            logger.warning("row with index %s not scored: %s", rows[INDEX_COLUMN].iloc[0], exc)
            yield failed
            return
        middle = len(rows) // 2
        yield from _score_rows(predict, rows.iloc[:middle], images_dir)
        yield from _score_rows(predict, rows.iloc[middle:], images_dir)
        return
    result[ERROR_COLUMN] = ""
    yield result


def _empty_rows(index: pd.Index | None = None) -> pd.DataFrame:
    index = index if index is not None else pd.RangeIndex(0)
    return pd.DataFrame({c: [None] * len(index) for c in SCORE_COLUMNS[1:]}, index=index)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable dtypes matching `SCORE_SCHEMA` (a failed row has nulls)."""
    out = frame.loc[:, list(SCORE_COLUMNS)].copy()
    for column, dtype in OUTPUT_DTYPES.items():
        if dtype == "bool":
            out[column] = out[column].astype("boolean")
        elif dtype in _NULLABLE:
            out[column] = pd.to_numeric(out[column]).astype(_NULLABLE[dtype])  # type: ignore[call-overload]
    for column in ("category", NOTE_COLUMN, ERROR_COLUMN):
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out.reset_index(drop=True)


def prepare_output_dir(output: Path, *, overwrite: bool) -> None:
    """Refuse to mix two jobs' files: `output` must be absent or empty, unless `overwrite`.

    Raises:
        DataError: `output` is a file, or a non-empty directory without `overwrite`.
    """
    if output.is_file():
        raise DataError(f"--output {output} is a file; expected a directory")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise DataError(f"--output {output} exists and is not empty (use --overwrite)")
        shutil.rmtree(output)
