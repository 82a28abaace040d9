"""Batch prediction for a CSV in the official X layout, streamed chunk by chunk.

Input: an unnamed first index column, `designation`, `description`, `productid`,
`imageid` (only `designation` is required; the ids are needed to find images). Output: the
input index (same name, first column), then the prediction contract columns and a `note`
that says when a row was predicted from less than usual. Every input row gets exactly one
output row, in input order; the output appears only when complete (temp file + rename).
"""

from __future__ import annotations

import csv
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import pandas as pd
from tqdm import tqdm

from rakuten_mlops.errors import DataError, ModelError, RakutenError
from rakuten_mlops.inference.model_io import (
    NOTE_DESIGNATION_FROM_DESCRIPTION,
    NOTE_IMAGE_ONLY,
    NOTE_NO_INPUT,
    build_model_input,
    check_model_output,
    resolve_notes,
)
from rakuten_mlops.schema import OUTPUT_COLUMNS, as_id, image_filename

if TYPE_CHECKING:
    from rakuten_mlops.models.pyfunc import PredictFn

logger = logging.getLogger(__name__)


REQUIRED_COLUMNS = ("designation",)
IMAGE_ID_COLUMNS = ("productid", "imageid")
NOTE_COLUMN = "note"
__all__ = [
    "NOTE_COLUMN",
    "NOTE_DESIGNATION_FROM_DESCRIPTION",
    "NOTE_IMAGE_ONLY",
    "NOTE_NO_INPUT",
    "build_batch_input",
    "predict_chunk",
    "predict_csv",
]
DEFAULT_CHUNK_SIZE = 5000


@dataclass(frozen=True)
class PredictSummary:
    """What a batch prediction did."""

    output: Path
    rows: int
    chunks: int
    with_image: int
    notes: dict[str, int]

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        lines = [
            f"wrote {self.rows:,} predictions to {self.output} "
            f"({self.chunks} chunk(s), {self.with_image:,} with an image)"
        ]
        lines += [f"  {count:,} row(s): {note}" for note, count in sorted(self.notes.items())]
        return "\n".join(lines)


def read_input_columns(path: Path) -> tuple[str | None, list[str]]:
    """The index name and columns of an X-layout CSV (header only).

    Raises:
        DataError: the file is missing, empty or not a CSV.
    """
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    try:
        header = pd.read_csv(path, index_col=0, nrows=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    name = header.index.name
    return (str(name) if name is not None else None), [str(c) for c in header.columns]


def check_input_columns(path: Path, columns: list[str], *, need_image_ids: bool) -> None:
    """Refuse an input without the columns prediction needs.

    Raises:
        DataError: naming the file and the missing column.
    """
    needed = list(REQUIRED_COLUMNS) + (list(IMAGE_ID_COLUMNS) if need_image_ids else [])
    for column in needed:
        if column not in columns:
            why = " (needed to find the images given with --images)" if need_image_ids else ""
            raise DataError(
                f"{path}: missing required column `{column}`{why}; columns found: "
                f"{', '.join(columns) or 'none'} (the first column is read as the index)"
            )


def check_prediction_args(
    input_path: Path, output_path: Path, images_dir: Path | None, chunk_size: int
) -> tuple[str | None, list[str]]:
    """Every check of a batch prediction that needs no model: run it before loading one.

    Returns:
        The input's index name and columns (`read_input_columns`).

    Raises:
        DataError: bad chunk size, missing images folder, missing or unreadable input, a
            missing column, or an output path that is the input file itself.
    """
    if chunk_size < 1:
        raise DataError(f"--chunk-size must be >= 1, got {chunk_size}")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise DataError(f"images directory not found: {images_dir}")
    index_name, columns = read_input_columns(input_path)
    check_input_columns(input_path, columns, need_image_ids=images_dir is not None)
    if _same_file(input_path, output_path):
        raise DataError(
            f"--output {output_path} is the input file: the predictions would overwrite it; "
            "choose another output path"
        )
    return index_name, columns


def _same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (same resolved path, or a link to it)."""
    if Path(first).resolve() == Path(second).resolve():
        return True
    try:
        return Path(first).samefile(second)
    except OSError:  # the output does not exist yet
        return False


class _Terminated(SystemExit):
    """SIGTERM turned into an exception, so that `finally` blocks clean up."""


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Raise `SystemExit(143)` on SIGTERM inside the block (main thread only).

    A killed batch prediction then removes its temporary file as Ctrl-C does; the previous
    handler is restored afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_batch_input(
    chunk: pd.DataFrame, images_dir: Path | None
) -> tuple[pd.DataFrame, list[str]]:
    """Model input rows of one chunk and a note per row.

    An empty designation is replaced by the description (the model needs a title); image
    paths are `images_dir/image_<imageid>_product_<productid>.jpg` when that file exists,
    "" otherwise (text-only prediction). A corrupt image is the model's business: it falls
    back to text.
    """
    return build_model_input(
        _text_column(chunk, "designation").tolist(),
        _text_column(chunk, "description").tolist(),
        image_paths=_image_paths(chunk, images_dir),
        index=chunk.index,
    )


def predict_csv(
    predict: PredictFn,
    input_path: Path,
    output_path: Path,
    *,
    images_dir: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> PredictSummary:
    """Predict every row of an X-layout CSV into `output_path`, chunk by chunk.

    Memory holds one chunk at a time. The output is written to a temporary file next to
    `output_path` and renamed over it only when every row is done.

    Args:
        predict: the model (a pyfunc model's `predict`, or `ProductClassifier.predict`).
        images_dir: folder with `image_<imageid>_product_<productid>.jpg` files.
        chunk_size: rows per chunk.

    Raises:
        DataError: unreadable input, a missing column, a malformed row.
        ModelError: the model failed or returned a wrong number of rows.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    index_name, _ = check_prediction_args(input_path, output_path, images_dir, chunk_size)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = output_path.with_name(f".{output_path.name}.part")

    rows = chunks = with_image = 0
    notes: dict[str, int] = {}
    with _terminate_as_exception():
        try:
            reader = pd.read_csv(
                input_path,
                index_col=0,
                chunksize=chunk_size,
                dtype={"designation": "string", "description": "string"},
                keep_default_na=False,
                na_values=[""],
            )
            with (
                reader,
                tmp_path.open("w", encoding="utf-8", newline="") as out,
                tqdm(
                    desc="predict", unit="rows", file=sys.stderr, disable=not progress, leave=False
                ) as bar,
            ):
                for chunk in reader:
                    if chunk.empty:  # a header-only file still yields one empty chunk
                        continue
                    chunk.index.name = index_name
                    result = predict_chunk(predict, chunk, images_dir, first_row=rows)
                    result.to_csv(out, header=chunks == 0, index=True, lineterminator="\n")
                    rows += len(chunk)
                    chunks += 1
                    with_image += int(result["has_image"].sum())
                    for note in result[NOTE_COLUMN]:
                        if note:
                            notes[note] = notes.get(note, 0) + 1
                    bar.update(len(chunk))
                if chunks == 0:  # header only: still write a valid, empty output
                    empty = pd.DataFrame(columns=[*OUTPUT_COLUMNS, NOTE_COLUMN])
                    empty.index.name = index_name
                    empty.to_csv(out, index=True, lineterminator="\n")
            tmp_path.replace(output_path)
        except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
            tmp_path.unlink(missing_ok=True)
            raise DataError(f"{input_path}: cannot read the rows after row {rows}: {exc}") from exc
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    return PredictSummary(
        output=output_path, rows=rows, chunks=chunks, with_image=with_image, notes=notes
    )


def predict_chunk(
    predict: PredictFn, chunk: pd.DataFrame, images_dir: Path | None, *, first_row: int = 0
) -> pd.DataFrame:
    """Predictions of one chunk: index = the chunk's index, contract columns + `note`.

    Raises:
        ModelError: the model failed or did not return one row per input row.
    """
    model_input, notes = build_batch_input(chunk, images_dir)
    try:
        predictions = predict(model_input.reset_index(drop=True))
    except RakutenError:
        raise
    except Exception as exc:  # the model is a black box here: name the rows, keep the cause
        last = first_row + len(chunk)
        raise ModelError(
            f"the model failed on data rows {first_row + 1}-{last}: {type(exc).__name__}: {exc}"
        ) from exc
    rows = f"data rows {first_row + 1}-{first_row + len(chunk)}"
    output = check_model_output(predictions, len(chunk), rows).copy()
    output.index = chunk.index
    output[NOTE_COLUMN] = resolve_notes(notes, output["has_image"].astype(bool).tolist())
    return output


def _text_column(chunk: pd.DataFrame, column: str) -> pd.Series:
    if column not in chunk.columns:
        return pd.Series("", index=chunk.index, dtype=object)
    return chunk[column].astype(object).where(chunk[column].notna(), "").astype(str)


def _image_paths(chunk: pd.DataFrame, images_dir: Path | None) -> list[str]:
    if images_dir is None:
        return [""] * len(chunk)
    paths: list[str] = []
    for imageid, productid in zip(chunk["imageid"], chunk["productid"], strict=True):
        image_id, product_id = as_id(imageid), as_id(productid)
        if image_id is None or product_id is None:
            paths.append("")
            continue
        candidate = images_dir / image_filename(image_id, product_id)
        paths.append(str(candidate) if candidate.is_file() else "")
    return paths
