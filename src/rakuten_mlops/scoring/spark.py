"""Scoring on Spark: the same pyfunc model and row code, one model per executor Python worker.

The driver reads the inputs with Spark (CSV with multi-line quoted fields, or Parquet), ships
the model directory to the executors (`SparkContext.addFile`), and `mapInPandas` scores
Arrow batches with `catalogue.score_chunk`: the model is loaded the first time a Python
worker needs it and kept for its next tasks (`spark.python.worker.reuse`). Output: Parquet
part files, one per partition, in no particular order (the `index` column is the key).

Needs the `spark` extra (`pip install -e '.[spark]'`) and Java 17.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.scoring.catalogue import (
    ERROR_COLUMN,
    INDEX_COLUMN,
    SCORE_SCHEMA,
    X_COLUMNS,
    ScoreSummary,
    find_index_column,
    input_format,
    prepare_output_dir,
    score_chunk,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from rakuten_mlops.models.pyfunc import PredictFn

# Models loaded in this (executor Python worker) process, by shipped directory name.
_EXECUTOR_MODELS: dict[str, PredictFn] = {}


def build_spark_session(master: str | None, *, app_name: str = "rakuten-score") -> SparkSession:
    """A Spark session on `master` (`local[N]`, `spark://...`, `yarn`, `k8s://...`).

    `master` None or "" keeps what `spark-submit` configured. The Python workers run this
    interpreter unless `PYSPARK_PYTHON` says otherwise.

    Raises:
        ModelError: PySpark is not installed (the `spark` extra).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ModelError(
            "the spark engine needs PySpark: pip install -c requirements/lock.txt -e '.[spark]'"
        ) from exc
    # py4j logs its connections at INFO, even from `__del__` at interpreter exit.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
        if master.startswith("local"):
            # Never listen beyond this machine for a local run.
            builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
                "spark.driver.host", "127.0.0.1"
            )
    session: SparkSession = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    # Spark's INFO/WARN lines (an unnamed CSV index column is a WARN) drown the summary.
    session.sparkContext.setLogLevel("ERROR")
    return session


def score_spark(
    model_dir: Path,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    master: str | None = "local[2]",
    images_dir: Path | None = None,
    chunk_size: int = 5000,
    partitions: int = 0,
    threads_per_task: int = 1,
    overwrite: bool = False,
    spark: SparkSession | None = None,
) -> ScoreSummary:
    """Score every row of `inputs` on Spark into Parquet part files under `output`.

    Args:
        model_dir: a local pyfunc model directory (see `local_model_dir` for URIs).
        inputs: CSV or Parquet files (paths or URLs the executors can read).
        output: output directory (local path or a URL such as `s3a://...`).
        master: Spark master; None or "" keeps spark-submit's.
        images_dir: image folder visible to every executor at the same path.
        chunk_size: rows per Arrow batch given to the model.
        partitions: partitions to score (0: the cluster's default parallelism).
        threads_per_task: torch threads per Python worker (match `spark.task.cpus`).
        spark: an existing session (kept open); otherwise one is built and stopped.

    Raises:
        DataError: no input, an input without the needed columns, output not empty.
        ModelError: no model at `model_dir`, PySpark missing.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "MLmodel").is_file():
        raise ModelError(f"no MLflow model at {model_dir}: MLmodel file not found")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise DataError(f"images directory not found: {images_dir}")
    if not inputs:
        raise DataError("no input file to score")
    output_text = str(output)
    if "://" not in output_text:
        prepare_output_dir(Path(output_text), overwrite=overwrite)
    owned = spark is None
    session = spark or build_spark_session(master)
    try:
        session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_size))
        session.sparkContext.addFile(str(model_dir), recursive=True)
        frame = read_catalogue(session, inputs)
        wanted = partitions or session.sparkContext.defaultParallelism
        if frame.rdd.getNumPartitions() < wanted:
            frame = frame.repartition(wanted)
        scorer = functools.partial(
            score_partition,
            model_name=model_dir.name,
            images_dir=str(Path(images_dir).resolve()) if images_dir else None,
            threads=threads_per_task,
        )
        scored = frame.mapInPandas(scorer, schema=spark_score_schema())
        scored.write.mode("overwrite").parquet(output_text)
        from pyspark.sql import functions as sf

        counts = (
            session.read.parquet(output_text)
            .agg(
                sf.count(sf.lit(1)).alias("rows"),
                sf.sum((sf.coalesce(sf.col(ERROR_COLUMN), sf.lit("")) != "").cast("int")).alias(
                    "failed"
                ),
                sf.sum(sf.coalesce(sf.col("has_image"), sf.lit(False)).cast("int")).alias("images"),
            )
            .collect()[0]
        )
    finally:
        if owned:
            session.stop()
    return ScoreSummary(
        engine=f"spark ({master or 'spark-submit master'})",
        output=Path(output_text),
        rows=int(counts["rows"]),
        failed=int(counts["failed"] or 0),
        with_image=int(counts["images"] or 0),
        seconds=time.perf_counter() - started,
    )


def read_catalogue(spark: SparkSession, inputs: Sequence[str | Path]) -> DataFrame:
    """The inputs as one DataFrame: `index` (long, null when not an integer) + X columns (text).

    CSV: header, multi-line quoted fields with doubled quotes (pandas' and the official
    files' dialect); a line with the wrong number of fields is dropped.

    Raises:
        DataError: an input lacks the index or the `designation` column.
    """
    from pyspark.sql import functions as sf

    frames = []
    for fmt, group in groupby([str(p) for p in inputs], key=lambda p: input_format(Path(p))):
        paths = list(group)
        if fmt == "csv":
            raw = (
                spark.read.option("header", True)
                .option("multiLine", True)
                .option("quote", '"')
                .option("escape", '"')
                .option("mode", "DROPMALFORMED")
                .csv(paths)
            )
        else:
            raw = spark.read.parquet(*paths)
        index_column = find_index_column(raw.columns, ", ".join(paths))
        if "designation" not in raw.columns:
            raise DataError(
                f"{', '.join(paths)}: missing required column `designation`; columns found: "
                f"{', '.join(raw.columns)}"
            )
        columns = [sf.col(f"`{index_column}`").cast("string").try_cast("long").alias(INDEX_COLUMN)]
        columns += [
            (sf.col(c).cast("string") if c in raw.columns else sf.lit(None).cast("string")).alias(c)
            for c in X_COLUMNS
        ]
        frames.append(raw.select(*columns))
    result = frames[0]
    for other in frames[1:]:
        result = result.unionByName(other)
    return result


def spark_score_schema() -> Any:
    """`catalogue.SCORE_SCHEMA` as a Spark schema."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(SCORE_SCHEMA)


def score_partition(
    batches: Iterator[pd.DataFrame], *, model_name: str, images_dir: str | None, threads: int
) -> Iterator[pd.DataFrame]:
    """`mapInPandas` body: score each Arrow batch with the worker's copy of the model."""
    predict = executor_model(model_name, threads)
    images = Path(images_dir) if images_dir else None
    for batch in batches:
        yield score_chunk(predict, batch, images)


def executor_model(model_name: str, threads: int) -> PredictFn:
    """The model shipped as `model_name`, loaded once per Python worker process."""
    if model_name not in _EXECUTOR_MODELS:
        from pyspark import SparkFiles

        from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        _EXECUTOR_MODELS[model_name] = as_predict_fn(load_pyfunc_model(SparkFiles.get(model_name)))
    return _EXECUTOR_MODELS[model_name]


def local_model_dir(uri_or_dir: str, workdir: Path | None = None) -> Path:
    """A local directory of the model: itself, or the MLflow URI's artifacts downloaded.

    Raises:
        ModelError: the URI cannot be resolved or downloaded.
    """
    local = Path(uri_or_dir)
    if "://" not in uri_or_dir and not uri_or_dir.startswith(("models:", "runs:")):
        if not (local / "MLmodel").is_file():
            raise ModelError(f"no MLflow model at {local}: MLmodel file not found")
        return local.resolve()
    import mlflow
    from mlflow.exceptions import MlflowException

    target = workdir or Path(tempfile.mkdtemp(prefix="rakuten-score-model-"))
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri_or_dir, dst_path=str(target))
    except MlflowException as exc:
        raise ModelError(f"cannot download the model {uri_or_dir}: {exc.message}") from exc
    except OSError as exc:
        raise ModelError(f"cannot download the model {uri_or_dir}: {exc}") from exc
    return Path(path)
