"""Scoring in one process: the inputs streamed chunk by chunk into one Parquet file."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from rakuten_mlops.scoring.catalogue import (
    ERROR_COLUMN,
    SCORE_SCHEMA,
    SUCCESS_MARKER,
    ScoreSummary,
    iter_input_chunks,
    prepare_output_dir,
    score_chunk,
)

if TYPE_CHECKING:
    from rakuten_mlops.models.pyfunc import PredictFn

PART_FILE = "part-00000.parquet"


def score_local(
    predict: PredictFn,
    inputs: Sequence[Path],
    output: Path,
    *,
    images_dir: Path | None = None,
    chunk_size: int = 5000,
    overwrite: bool = False,
    progress: bool = True,
) -> ScoreSummary:
    """Score every row of `inputs` into `output/part-00000.parquet` (+ `_SUCCESS`).

    Memory holds one chunk. The files are written in a sibling temporary directory that
    replaces `output` only when every row is done.

    Raises:
        DataError: an unreadable input, or `output` not empty without `overwrite`.
    """
    started = time.perf_counter()
    output = Path(output)
    prepare_output_dir(output, overwrite=overwrite)
    tmp = output.with_name(f".{output.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = failed = with_image = 0
    try:
        with (
            pq.ParquetWriter(tmp / PART_FILE, SCORE_SCHEMA) as writer,
            tqdm(
                desc="score", unit="rows", file=sys.stderr, disable=not progress, leave=False
            ) as bar,
        ):
            for chunk in iter_input_chunks(inputs, chunk_size):
                scored = score_chunk(predict, chunk, images_dir)
                writer.write_table(
                    pa.Table.from_pandas(scored, schema=SCORE_SCHEMA, preserve_index=False)
                )
                rows += len(scored)
                failed += int((scored[ERROR_COLUMN].fillna("") != "").sum())
                with_image += int(scored["has_image"].fillna(False).sum())
                bar.update(len(scored))
        (tmp / SUCCESS_MARKER).touch()
        if output.exists():
            output.rmdir()  # empty: checked by prepare_output_dir
        tmp.replace(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ScoreSummary(
        engine="local",
        output=output,
        rows=rows,
        failed=failed,
        with_image=with_image,
        seconds=time.perf_counter() - started,
    )
