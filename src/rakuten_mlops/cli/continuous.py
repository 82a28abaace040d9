"""`rakuten-mlops feedback export | retrain | simulate traffic`: the continuous-training loop."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import Settings, get_settings
from rakuten_mlops.params import load_params, parse_params

feedback_app = typer.Typer(
    help="Reviewers' corrections: the append-only labelled feedback layer.", no_args_is_help=True
)
simulate_app = typer.Typer(help="Simulated production traffic.", no_args_is_help=True)

FeedbackDirOption = Annotated[
    Path | None,
    typer.Option(help="Feedback layer (default: data.feedback.dir in params.yaml, data/feedback)."),
]
ParamsOption = Annotated[
    Path | None, typer.Option(help="Parameters file (default: RAKUTEN_PARAMS_FILE, params.yaml).")
]


def register_continuous_commands(app: typer.Typer) -> None:
    """Add `feedback`, `retrain` and `simulate` to the root app."""
    app.add_typer(feedback_app, name="feedback")
    app.command("retrain")(retrain)
    app.add_typer(simulate_app, name="simulate")


def _feedback_dir(settings: Settings, params: Path | None, given: Path | None) -> Path:
    if given is not None:
        return given
    params_file = params or settings.params_file
    values = load_params(params_file) if params_file.is_file() else {}
    return Path(parse_params(values).data.feedback.dir)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _database_url(settings: Settings) -> str:
    return settings.database_url


def _service_url(settings: Settings) -> str:
    return settings.service_url


def _api_key(settings: Settings) -> str | None:
    secret = settings.service_api_key
    return secret.get_secret_value() if secret is not None else None


@feedback_app.command("export")
@handle_errors
def export(
    out_dir: FeedbackDirOption = None,
    params: ParamsOption = None,
    database_url: Annotated[
        str | None, typer.Option(help="Service database (default: RAKUTEN_DATABASE_URL).")
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(help="Where relative stored image paths are resolved (default: cwd)."),
    ] = None,
    allow_missing_db: Annotated[
        bool,
        typer.Option(help="A SQLite database that does not exist yet means nothing to export."),
    ] = False,
) -> None:
    """Write the products reviewers corrected since the last export as a new batch."""
    from rakuten_mlops.data.feedback_export import export_feedback
    from rakuten_mlops.db.session import sqlite_path

    settings = get_settings()
    url = database_url or _database_url(settings)
    target = _feedback_dir(settings, params, out_dir)
    path = sqlite_path(url)
    if allow_missing_db and path is not None and not path.is_file():
        target.mkdir(parents=True, exist_ok=True)
        console.print(f"no service database at {path} yet: nothing to export", markup=False)
        return
    result = export_feedback(url, target, image_root=image_root)
    console.print(result.summary(), markup=False, soft_wrap=True)


@handle_errors
def retrain(
    params: ParamsOption = None,
    raw_dir: Annotated[
        Path | None, typer.Option(help="Raw data directory (default: RAKUTEN_RAW_DIR).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Processed data directory (default: RAKUTEN_PROCESSED_DIR)."),
    ] = None,
    feedback_dir: FeedbackDirOption = None,
    steps: Annotated[
        str, typer.Option(help="Comma-separated subset of export,prepare,train,reload.")
    ] = "export,prepare,train,reload",
    force: Annotated[
        bool, typer.Option(help="Train even with fewer than data.feedback.min_new_labels.")
    ] = False,
    decision_out: Annotated[
        Path | None,
        typer.Option(help="Decision JSON (default: RAKUTEN_REPORTS_DIR/retrain/decision.json)."),
    ] = None,
    service_url: Annotated[
        str | None, typer.Option(help="Service to reload (default: RAKUTEN_SERVICE_URL).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = False,
) -> None:
    """Export feedback, prepare, train, gate and (when promoted) reload the service.

    Exits 0 whatever the gate decides (promoted, kept, skipped: read the decision JSON);
    non-zero only when a step fails.
    """
    from rakuten_mlops.training.retrain import run_retrain

    settings = get_settings()
    out = decision_out or settings.reports_dir / "retrain" / "decision.json"
    decision = run_retrain(
        settings,
        params_file=params or settings.params_file,
        raw_dir=raw_dir or settings.raw_dir,
        processed_dir=data_dir or settings.processed_dir,
        feedback_dir=feedback_dir,
        database_url=_database_url(settings),
        steps=[s.strip() for s in steps.split(",") if s.strip()],
        force=force,
        decision_out=out,
        service_url=service_url or _service_url(settings),
        api_key=_api_key(settings),
        metrics_out=out.parent / "train_metrics.json",
        progress=progress,
    )
    console.print(decision.summary(), markup=False, soft_wrap=True)


@simulate_app.command("traffic")
@handle_errors
def traffic(
    rate: Annotated[float, typer.Option(help="Products per second.", min=0.01)] = 5.0,
    limit: Annotated[int, typer.Option(help="Products to send (cycled).", min=1)] = 100,
    max_seconds: Annotated[float, typer.Option(help="Stop after this long.", min=0.1)] = 600.0,
    input_csv: Annotated[
        Path | None,
        typer.Option("--input", help="CSV in the official X layout (default: the unseen split)."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="True codes of --input (official Y layout).")
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Images folder of --input.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Processed data directory (default: RAKUTEN_PROCESSED_DIR)."),
    ] = None,
    drift: Annotated[
        list[str] | None,
        typer.Option(help="category-surge, capitals, no-images or no-description (repeatable)."),
    ] = None,
    surge_code: Annotated[
        int | None, typer.Option(help="Class of the category surge (default: the most frequent).")
    ] = None,
    feedback_share: Annotated[
        float, typer.Option(help="Share of labelled answers that get feedback.", min=0, max=1)
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Order, drift and feedback choice.")] = 0,
    url: Annotated[
        str | None, typer.Option(help="Service URL (default: RAKUTEN_SERVICE_URL).")
    ] = None,
    summary_out: Annotated[
        Path | None, typer.Option(help="Also write the summary as JSON.")
    ] = None,
) -> None:
    """Replay products against the running service, with optional drift and feedback."""
    from rakuten_mlops.simulation.traffic import apply_drift, load_traffic, simulate_traffic

    settings = get_settings()
    drifts = [d.strip() for value in drift or [] for d in value.split(",") if d.strip()]
    products = load_traffic(
        data_dir or settings.processed_dir,
        input_csv=input_csv,
        labels_csv=labels,
        images_dir=images,
    )
    products = apply_drift(products, drifts, size=limit, seed=seed, surge_code=surge_code)
    # SIGTERM (a supervisor, or `kill` from a script whose background jobs ignore SIGINT)
    # stops the replay like Ctrl+C: the summary of what was sent is still printed.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = simulate_traffic(
            products,
            url or _service_url(settings),
            rate=rate,
            max_seconds=max_seconds,
            feedback_share=feedback_share,
            api_key=_api_key(settings),
            drift=drifts,
            seed=seed,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(summary.summary(), markup=False, soft_wrap=True)
    if summary_out is not None:
        summary_out.parent.mkdir(parents=True, exist_ok=True)
        summary_out.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
