"""`rakuten-mlops train | evaluate | predict`: make, judge and use the classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import get_settings
from rakuten_mlops.errors import DataError
from rakuten_mlops.params import EvaluationSettings, load_params, parse_section

DEFAULT_TRAIN_METRICS = Path("metrics/train.json")
DEFAULT_EVALUATE_METRICS = Path("metrics/evaluate.json")

DataDirOption = Annotated[
    Path | None,
    typer.Option(help="Processed data directory (default: RAKUTEN_PROCESSED_DIR, data/processed)."),
]
ParamsOption = Annotated[
    Path | None, typer.Option(help="Parameters file (default: RAKUTEN_PARAMS_FILE, params.yaml).")
]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="Model directory or MLflow URI (models:/rakuten-product-classifier@champion, "
        "runs:/<run id>/model).",
    ),
]


def register_model_commands(app: typer.Typer) -> None:
    """Add `train`, `evaluate` and `predict` to the root app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)


@handle_errors
def train(
    data_dir: DataDirOption = None,
    params: ParamsOption = None,
    model_out: Annotated[
        Path | None,
        typer.Option(help="Also write the MLflow model directory here (replaced atomically)."),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            help="Register a new version (alias challenger) and promote it to champion if the "
            "promotion gate passes."
        ),
    ] = True,
    metrics_out: Annotated[
        Path, typer.Option(help="DVC metrics file of the run (JSON).")
    ] = DEFAULT_TRAIN_METRICS,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    log_model: Annotated[
        bool | None,
        typer.Option(
            "--log-model/--no-log-model",
            help="Store the model (~100 MB) in the MLflow run's artifacts. Default: only "
            "with --register (a registered version needs it); metrics, params and reports "
            "are logged either way.",
        ),
    ] = None,
) -> None:
    """Train the classifier, evaluate it on the test split, track and register it."""
    from rakuten_mlops.training.train import train_model

    settings = get_settings()
    result = train_model(
        data_dir or settings.processed_dir,
        load_params(params or settings.params_file),
        settings=settings,
        model_out=model_out,
        register=register,
        metrics_out=metrics_out,
        progress=progress,
        log_model=log_model,
    )
    console.print(result.summary(), highlight=False, soft_wrap=True)


@handle_errors
def evaluate(
    model: ModelOption,
    split: Annotated[str, typer.Option(help="Processed split to evaluate on.")] = "test",
    data_dir: DataDirOption = None,
    params: ParamsOption = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Report directory (default: RAKUTEN_REPORTS_DIR/evaluation)."),
    ] = None,
    metrics_out: Annotated[
        Path, typer.Option(help="DVC metrics file (JSON).")
    ] = DEFAULT_EVALUATE_METRICS,
    latency: Annotated[
        bool, typer.Option(help="Also time single-item and batch predictions.")
    ] = True,
) -> None:
    """Evaluate any model (directory or MLflow URI) on a labelled split; write reports."""
    from rakuten_mlops.data.prepare import load_split
    from rakuten_mlops.evaluation.evaluate import (
        evaluate_model,
        write_evaluation_reports,
        write_metrics_file,
    )
    from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model
    from rakuten_mlops.tracking import set_tracking_uri, uses_tracking_store

    settings = get_settings()
    # Evaluating a model needs no experiment parameters: defaults when there is no file.
    params_file = params or settings.params_file
    parameters = load_params(params_file) if params or params_file.is_file() else {}
    eval_settings = parse_section(EvaluationSettings, parameters.get("evaluate"), "evaluate")
    frame = load_split(data_dir or settings.processed_dir, split)
    if uses_tracking_store(model):  # read-only: never creates a store
        set_tracking_uri(settings, create=False)
    pyfunc_model = load_pyfunc_model(model)
    result = evaluate_model(
        as_predict_fn(pyfunc_model),
        frame,
        eval_settings,
        split=split,
        classifier=_unwrap_classifier(pyfunc_model),
        latency=latency,
    )
    reports = out_dir or settings.reports_dir / "evaluation"
    files = write_evaluation_reports(
        result, reports, model_name=settings.model_name, extra={"model": model}
    )
    write_metrics_file(metrics_out, {"model": model, **result.to_dict()})
    m = result.metrics
    console.print(
        f"{model} on {split} ({int(m['n'])} rows): weighted F1 {m['weighted_f1']:.4f} | "
        f"macro F1 {m['macro_f1']:.4f} | accuracy {m['accuracy']:.4f} | ECE {m['ece']:.4f}",
        highlight=False,
        soft_wrap=True,
    )
    for name, values in result.slices.items():
        console.print(
            f"  slice {name:<20} n={int(values['n']):>6}  weighted F1 {values['weighted_f1']:.4f}",
            highlight=False,
        )
    console.print(f"reports: {reports} ({len(files)} files); metrics: {metrics_out}")


@handle_errors
def predict(
    model: ModelOption,
    input_csv: Annotated[Path, typer.Option("--input", help="CSV in the official X layout.")],
    output: Annotated[Path, typer.Option(help="Output CSV (written atomically).")],
    images: Annotated[
        Path | None,
        typer.Option(help="Folder with image_<imageid>_product_<productid>.jpg files."),
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Rows per chunk (memory bound).", min=1)] = 5000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Predict the product type code of every row of a CSV, streaming in chunks."""
    if not input_csv.is_file():  # before the slow imports: fail fast on a typo
        raise DataError(f"input file not found: {input_csv}")
    from rakuten_mlops.inference.batch import check_prediction_args, predict_csv

    # Input errors are reported before the model loads (seconds).
    check_prediction_args(input_csv, output, images, chunk_size)
    from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model
    from rakuten_mlops.tracking import set_tracking_uri, uses_tracking_store

    if uses_tracking_store(model):  # read-only: never creates a store
        set_tracking_uri(get_settings(), create=False)
    pyfunc_model = load_pyfunc_model(model)
    summary = predict_csv(
        as_predict_fn(pyfunc_model),
        input_csv,
        output,
        images_dir=images,
        chunk_size=chunk_size,
        progress=progress,
    )
    console.print(summary.summary(), highlight=False, soft_wrap=True)


def _unwrap_classifier(pyfunc_model: Any) -> Any | None:
    """The `ProductClassifier` inside a pyfunc model (for per-branch scores), if reachable."""
    try:
        python_model = pyfunc_model.unwrap_python_model()
    except Exception:  # not a python_function model of ours: branches are optional
        return None
    classifier = getattr(python_model, "classifier", None)
    return classifier if hasattr(classifier, "predict_branches") else None
