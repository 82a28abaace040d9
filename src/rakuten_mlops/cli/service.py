"""`rakuten-mlops serve | db upgrade | abtest report`: run the prediction service, migrate
its database, compare champion and challenger on feedback."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from rakuten_mlops.cli._common import console, err_console, handle_errors
from rakuten_mlops.config import get_settings
from rakuten_mlops.errors import DataError, ModelError

db_app = typer.Typer(
    help="Service database (SQLite or PostgreSQL): migrations.", no_args_is_help=True
)
abtest_app = typer.Typer(help="Champion / challenger comparison on feedback.", no_args_is_help=True)


def register_service_commands(app: typer.Typer) -> None:
    """Add `serve`, `db` and `abtest` to the root app."""
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(abtest_app, name="abtest")


@handle_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help="Model directory or MLflow URI (default: RAKUTEN_SERVE_MODEL, "
            "models:/rakuten-product-classifier@champion)."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).", min=1, max=65535)] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default 1).", min=1)
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies trusted for X-Forwarded-For/-Proto, comma-separated IPs or networks "
            "(default: RAKUTEN_FORWARDED_ALLOW_IPS, 127.0.0.1,::1); the client IP of the per-IP "
            "/token limit behind a load balancer."
        ),
    ] = None,
) -> None:
    """Start the prediction service (uvicorn) with the model loaded once per worker."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from rakuten_mlops.db.migrate import upgrade_database
    from rakuten_mlops.db.session import DatabaseError
    from rakuten_mlops.serving.auth.startup import prepare_serve, resolve_secrets
    from rakuten_mlops.serving.db_health import is_unavailable

    # The app (in this process with one worker, or in each worker) builds its settings from
    # the environment: pass the options that way, before the settings are read and cached.
    if model is not None:
        os.environ["RAKUTEN_SERVE_MODEL"] = model
        get_settings.cache_clear()
    settings = get_settings()
    uri = settings.serve_model
    if (
        "://" not in uri
        and not uri.startswith(("models:", "runs:"))
        and not (Path(uri) / "MLmodel").is_file()
    ):
        raise ModelError(f"no MLflow model at {uri}: MLmodel file not found")
    host = host or settings.serve_host
    port = port or settings.serve_port
    workers = workers or settings.serve_workers
    try:
        upgrade_database(settings.database_url)  # once, before the workers start
        prepare_serve(settings)  # secrets checked, first admin created once
    except (DatabaseError, SQLAlchemyError) as exc:
        if not is_unavailable(exc):
            raise
        # Predictions need no database: start, and let the app migrate, create the first
        # admin and write spooled records once the database answers.
        resolved = resolve_secrets(settings)  # the secrets are still checked now
        if resolved.generated_jwt_secret and resolved.settings.jwt_secret is not None:
            os.environ["RAKUTEN_JWT_SECRET"] = resolved.settings.jwt_secret.get_secret_value()
        err_console.print(
            f"warning: {exc}; starting anyway (503 for what needs the database until it answers)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"serving {uri} on http://{host}:{port} ({workers} worker(s)); docs at "
        f"http://{host}:{port}/docs",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(
        "rakuten_mlops.serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips or settings.forwarded_allow_ips,
    )


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the migrations to RAKUTEN_DATABASE_URL (created when missing)."""
    from rakuten_mlops.db.migrate import upgrade_database

    url = get_settings().database_url
    reached = upgrade_database(url, revision)
    from rakuten_mlops.db.session import redact_database_url

    shown = redact_database_url(url)
    console.print(f"service database at revision {reached}: {shown}", highlight=False)


@abtest_app.command("report")
@handle_errors
def abtest_report(
    since: Annotated[
        str | None,
        typer.Option(help="Only predictions since: a duration (7d, 12h) or an ISO date."),
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.", min=100)] = 1000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
) -> None:
    """Compare champion and challenger on feedback: accuracy, weighted F1 (CI), agreement,
    latency, and whether the difference is significant."""
    from rakuten_mlops.db import crud
    from rakuten_mlops.db.migrate import check_service_database
    from rakuten_mlops.db.session import make_engine, make_session_factory
    from rakuten_mlops.evaluation.abtest import compare_variants

    url = get_settings().database_url
    check_service_database(url)  # never creates an empty database
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            rows = crud.predictions_with_feedback(session, _parse_since(since))
    finally:
        engine.dispose()
    report = compare_variants(rows, n_bootstrap=bootstrap)
    console.print(report.summary(), highlight=False, soft_wrap=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        console.print(f"written: {json_out}")


def _parse_since(text: str | None) -> datetime | None:
    """`--since`: a duration as the monitoring commands take it (30m, 12h, 7d, 2w) or an ISO date."""
    from rakuten_mlops.monitoring.runs import parse_duration

    if not text:
        return None
    try:
        return datetime.now(UTC) - parse_duration(text)
    except DataError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(
            f"--since: expected a duration like 30m, 12h, 7d or 2w, or an ISO date, got {text!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
