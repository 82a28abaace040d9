"""`rakuten-mlops data ...`: download or import the raw data, validate it, prepare splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import get_settings
from rakuten_mlops.params import load_params

data_app = typer.Typer(
    help="Raw data: download / import -> validate -> prepare.", no_args_is_help=True
)


@data_app.command("download")
@handle_errors
def download(
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Dataset base URL (default: the Hugging Face dataset, RAKUTEN_HF_BASE_URL)."
        ),
    ] = None,
    dest: Annotated[
        Path | None, typer.Option(help="Raw data directory (default: RAKUTEN_RAW_DIR, data/raw).")
    ] = None,
) -> None:
    """Download the official files and images, resumable, with a SHA-256 manifest."""
    from rakuten_mlops.data.download import download_dataset

    settings = get_settings()
    manifest = download_dataset(
        base_url or settings.hf_base_url,
        dest or settings.raw_dir,
        token=settings.hf_token.get_secret_value() if settings.hf_token else None,
        timeout_s=settings.download_timeout_s,
        retries=settings.download_retries,
        backoff_s=settings.download_backoff_s,
        max_extract_bytes=settings.max_extract_bytes,
        max_extract_ratio=settings.max_extract_ratio,
    )
    console.print(manifest.summary())


@data_app.command("import")
@handle_errors
def import_(
    source: Annotated[
        Path,
        typer.Option(help="Local copy in the official layout (X/Y CSVs + images/image_train/)."),
    ],
    dest: Annotated[
        Path | None, typer.Option(help="Raw data directory (default: RAKUTEN_RAW_DIR, data/raw).")
    ] = None,
) -> None:
    """Import a local copy of the challenge data into the raw layer, with a manifest."""
    from rakuten_mlops.data.ingest import import_dataset

    manifest = import_dataset(source, dest or get_settings().raw_dir)
    # Plain text: file names and product text may contain [brackets] rich would eat.
    console.print(manifest.summary(), markup=False, soft_wrap=True)


@data_app.command("validate")
@handle_errors
def validate(
    raw_dir: Annotated[
        Path | None, typer.Option(help="Raw data directory (default: RAKUTEN_RAW_DIR, data/raw).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="JSON report path (default: <interim dir>/validation_report.json)."),
    ] = None,
) -> None:
    """Check schema and quality; exit non-zero when the data is unusable."""
    from rakuten_mlops.data.validate import validate_raw

    settings = get_settings()
    result = validate_raw(
        raw_dir or settings.raw_dir, report or settings.interim_dir / "validation_report.json"
    )
    console.print(result.summary(), markup=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(code=1)


@data_app.command("prepare")
@handle_errors
def prepare(
    raw_dir: Annotated[
        Path | None, typer.Option(help="Raw data directory (default: RAKUTEN_RAW_DIR, data/raw).")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            help="Processed data directory (default: RAKUTEN_PROCESSED_DIR, data/processed)."
        ),
    ] = None,
    params: Annotated[
        Path | None, typer.Option(help="Parameters file (default: params.yaml).")
    ] = None,
    feedback_dir: Annotated[
        Path | None,
        typer.Option(
            help="Feedback layer merged into the training split (default: data.feedback.dir)."
        ),
    ] = None,
) -> None:
    """Clean text, resolve images and write a deterministic, leakage-free split."""
    from rakuten_mlops.data.prepare import prepare_dataset

    settings = get_settings()
    parameters = load_params(params or settings.params_file)
    result = prepare_dataset(
        raw_dir or settings.raw_dir,
        out_dir or settings.processed_dir,
        parameters.get("data", {}),
        feedback_dir=feedback_dir,
    )
    console.print(result.summary(), markup=False, soft_wrap=True)


@data_app.command("check-input")
@handle_errors
def check_input(
    input_csv: Annotated[Path, typer.Option("--input", help="CSV in the official X layout.")],
    need_image_ids: Annotated[
        bool, typer.Option(help="Also require `productid` and `imageid` (to find images).")
    ] = False,
    max_rows: Annotated[
        int | None, typer.Option(help="Refuse files with more rows than this.", min=1)
    ] = None,
) -> None:
    """Check a CSV of new listings the way `predict` reads it (no model needed)."""
    from rakuten_mlops.inference.check import check_input_csv

    result = check_input_csv(input_csv, need_image_ids=need_image_ids, max_rows=max_rows)
    console.print(result.summary(), markup=False, soft_wrap=True)
