"""`rakuten-mlops score`: re-score a catalogue into Parquet, in one process or on Spark."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import get_settings
from rakuten_mlops.errors import DataError


class Engine(StrEnum):
    """Where the rows are scored."""

    local = "local"
    spark = "spark"


def register_score_command(app: typer.Typer) -> None:
    """Add `score` to the root app."""
    app.command("score")(score)


@handle_errors
def score(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model directory or MLflow URI (models:/rakuten-product-classifier@champion).",
        ),
    ],
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            help="CSV or Parquet file(s) in the official X layout: a path, a folder or a glob "
            "('inbox/*.parquet').",
        ),
    ],
    output: Annotated[
        str, typer.Option(help="Output directory of Parquet part files (+ _SUCCESS).")
    ],
    engine: Annotated[Engine, typer.Option(help="local: this process; spark: Spark.")] = (
        Engine.local
    ),
    images: Annotated[
        Path | None,
        typer.Option(help="Folder with image_<imageid>_product_<productid>.jpg files."),
    ] = None,
    master: Annotated[
        str | None,
        typer.Option(help="Spark master (default: RAKUTEN_SPARK_MASTER, local[2])."),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(help="Spark partitions (default: RAKUTEN_SPARK_PARTITIONS).", min=0),
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Rows per model call.", min=1)] = 5000,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (local).")] = True,
) -> None:
    """Score every listing of a catalogue with the model into Parquet (column `index` kept).

    A row the model cannot score gets an `error` and no prediction; a missing image means
    a text-only prediction: neither fails the job.
    """
    from rakuten_mlops.scoring.catalogue import resolve_inputs
    from rakuten_mlops.tracking import set_tracking_uri

    settings = get_settings()
    if images is not None and not images.is_dir():
        raise DataError(f"--images {images}: directory not found")
    inputs = resolve_inputs(input_)
    if "://" in model or model.startswith(("models:", "runs:")):
        set_tracking_uri(settings)  # a local model directory needs no tracking store
    if engine is Engine.local:
        import torch

        from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model
        from rakuten_mlops.scoring.local import score_local

        if settings.num_threads > 0:
            torch.set_num_threads(settings.num_threads)
        summary = score_local(
            as_predict_fn(load_pyfunc_model(model)),
            inputs,
            Path(output),
            images_dir=images,
            chunk_size=chunk_size,
            overwrite=overwrite,
            progress=progress,
        )
    else:
        from rakuten_mlops.scoring.spark import local_model_dir, score_spark

        summary = score_spark(
            local_model_dir(model),
            inputs,
            output,
            master=settings.spark_master if master is None else master,
            images_dir=images,
            chunk_size=chunk_size,
            partitions=settings.spark_partitions if partitions is None else partitions,
            threads_per_task=settings.spark_task_threads,
            overwrite=overwrite,
        )
    console.print(summary.summary(), highlight=False, soft_wrap=True)
