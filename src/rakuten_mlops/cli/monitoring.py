"""`rakuten-mlops monitor drift | quality | estimate | prometheus-config`: drift, online quality,
performance without labels, alerting."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import get_settings

monitor_app = typer.Typer(
    help="Production monitoring: data drift against the training data, online quality.",
    no_args_is_help=True,
)

SinceOption = Annotated[
    str | None,
    typer.Option(help="Window ending now (or at --to): 30m, 12h, 7d, 2w. Default 7d."),
]
FromOption = Annotated[
    datetime | None,
    typer.Option("--from", help="Window start (ISO date or time, UTC when no offset)."),
]
ToOption = Annotated[
    datetime | None, typer.Option("--to", help="Window end (ISO date or time; default now).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
# The production scrape configuration, relative to the project directory.
PROMETHEUS_CONFIG = Path("monitoring/prometheus/prometheus.yml")


@monitor_app.command("drift")
@handle_errors
def drift(
    since: SinceOption = None,
    start: FromOption = None,
    end: ToOption = None,
    reference: Annotated[
        str, typer.Option(help="Processed split the production products are compared with.")
    ] = "train",
    model: Annotated[
        str | None,
        typer.Option(
            help="Model (directory or MLflow URI) whose vocabulary and held-out predictions "
            "complete the reference, e.g. models:/rakuten-product-classifier@champion. "
            "Default: none (vocabulary from the reference, classes from its labels)."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Report folder (default: <RAKUTEN_REPORTS_DIR>/monitoring)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compare recent predictions with the reference (Evidently); write HTML + JSON reports.

    Exits 0 whether drift is found or not (the verdict is in the report, the database and
    the `rakuten_drift_detected` gauge); non-zero only when the check cannot run.
    """
    from rakuten_mlops.db.migrate import check_service_database
    from rakuten_mlops.monitoring.drift import NotEnoughRowsError
    from rakuten_mlops.monitoring.runs import resolve_window, run_drift_check

    settings = get_settings()
    window = resolve_window(since, start, end)
    check_service_database(settings.database_url)
    try:
        check = run_drift_check(
            settings, window, reference_split=reference, model_uri=model, out_dir=out_dir
        )
    except NotEnoughRowsError as exc:
        # Not an error: a quiet day is not a failed check (the scheduler goes on).
        if as_json:
            payload = {"status": "not_enough_rows", "message": str(exc), "dataset_drift": False}
            typer.echo(json.dumps(payload, indent=2))
        else:
            console.print(f"no drift check: {exc}", highlight=False, soft_wrap=True)
        return
    summary = check.summary
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    verdict = (
        "[bold red]DRIFT[/bold red]" if summary["dataset_drift"] else "[green]no drift[/green]"
    )
    console.print(
        f"{verdict}: {len(summary['drifted_columns'])} of {len(summary['columns'])} columns "
        f"drifted (share {summary['drift_share']:.2f}, threshold "
        f"{summary['drift_share_threshold']:.2f}); {summary['rows']['current']:,} predictions "
        f"from {window[0]:%Y-%m-%d %H:%M} to {window[1]:%Y-%m-%d %H:%M} UTC vs "
        f"{summary['rows']['reference']:,} reference products ({reference})",
        highlight=False,
        soft_wrap=True,
    )
    for name, entry in summary["columns"].items():
        mark = "drift" if entry["drifted"] else ""
        score = "-" if entry["score"] is None else f"{entry['score']:.4f}"
        console.print(
            f"  {name:<26} {entry['method'] or '':<16} {score:>9}  {mark}", highlight=False
        )
    console.print(f"why: {summary['explanation']}", highlight=False, soft_wrap=True)
    console.print(f"report: {check.html_path}\nsummary: {check.json_path}", highlight=False)


@monitor_app.command("quality")
@handle_errors
def quality(
    since: SinceOption = None,
    start: FromOption = None,
    end: ToOption = None,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples of the weighted-F1 interval.", min=0)
    ] = 200,
    as_json: JsonOption = False,
) -> None:
    """Online accuracy and weighted F1 on reviewers' labels, per model version and variant.

    Beside them, the expected accuracy (mean calibrated top-1 confidence) over all the
    window's predictions and over the labelled ones.
    """
    from rakuten_mlops.db.migrate import check_service_database
    from rakuten_mlops.monitoring.quality import format_quality
    from rakuten_mlops.monitoring.runs import resolve_window, run_quality_check

    settings = get_settings()
    check_service_database(settings.database_url)
    window = resolve_window(since, start, end, default_since=f"{settings.quality_window_days}d")
    rows = run_quality_check(settings, window, n_boot=bootstrap)
    if as_json:
        payload = {
            "window": {"start": window[0].isoformat(), "end": window[1].isoformat()},
            "rows": [row.to_dict() for row in rows],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    console.print(
        f"online quality from {window[0]:%Y-%m-%d %H:%M} to {window[1]:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )
    console.print(format_quality(rows), highlight=False, soft_wrap=True)


@monitor_app.command("estimate")
@handle_errors
def estimate(
    predictions: Annotated[
        Path,
        typer.Option(help="A `rakuten-mlops predict` output (prdtypecode, top_k_code/proba)."),
    ],
    draws: Annotated[
        int, typer.Option(help="Label sets drawn from the probabilities for the interval.", min=0)
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Estimate precision, recall and F1 per class and the weighted F1, without labels.

    From the calibrated probabilities (confidence-based performance estimation), with the
    95 % interval of the weighted F1 that labels would measure. JSON keys:
    `estimated_weighted_f1`, `ci_low`, `ci_high`, `per_class`.
    """
    from rakuten_mlops.monitoring.estimate import (
        estimate_performance,
        format_estimate,
        read_prediction_file,
    )

    predicted, probabilities = read_prediction_file(predictions)
    result = estimate_performance(predicted, probabilities, draws=draws, seed=seed)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(format_estimate(result), highlight=False, soft_wrap=True)


@monitor_app.command("prometheus-config")
@handle_errors
def prometheus_config(
    target: Annotated[
        list[str],
        typer.Option(help="host:port of a service to scrape (repeatable)."),
    ],
    interval: Annotated[
        str | None,
        typer.Option(
            help="Scrape and rule evaluation interval (e.g. 2s); default: the configured 15s."
        ),
    ] = None,
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(help="File with the service's RAKUTEN_METRICS_TOKEN (sent as Bearer)."),
    ] = None,
    config: Annotated[
        Path, typer.Option(help="The scrape configuration to start from.")
    ] = PROMETHEUS_CONFIG,
    out: Annotated[
        Path | None, typer.Option(help="Write the configuration here (default: stdout).")
    ] = None,
) -> None:
    """The project's Prometheus configuration pointed at other targets (same alert rules).

    For a demo or a local check: the service job scrapes `--target`, the rule files are
    referenced by absolute path, and `--interval` may shorten the scrape and evaluation
    intervals (the rules' expressions and `for:` durations are unchanged).
    """
    import yaml

    from rakuten_mlops.errors import RakutenError
    from rakuten_mlops.monitoring.prometheus_config import render_prometheus_config

    if not config.is_file():
        raise RakutenError(f"--config: no such file {config}")
    rendered = render_prometheus_config(
        yaml.safe_load(config.read_text(encoding="utf-8")),
        config_dir=config.parent,
        targets=target,
        interval=interval,
        bearer_token_file=metrics_token_file.resolve() if metrics_token_file else None,
    )
    text = yaml.safe_dump(rendered, sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"Prometheus configuration: {out}", highlight=False)
