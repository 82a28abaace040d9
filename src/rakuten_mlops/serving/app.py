"""The FastAPI application factory: `create_app(settings)`; the lifespan loads the model.

Start-up migrates the database, starts the record writer and the micro-batcher, and loads
the models in the background (`/ready` answers 503 until then); shutdown finishes queued
predictions and writes every record before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rakuten_mlops import __version__
from rakuten_mlops.config import Settings, get_settings
from rakuten_mlops.db import crud
from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.monitoring.exporter import register_monitoring_metrics
from rakuten_mlops.serving.api.docs import OPENAPI_URL, install_docs
from rakuten_mlops.serving.api.main import include_api
from rakuten_mlops.serving.auth.wiring import (
    install_security,
    start_metrics_port,
    start_security,
    stop_security,
)
from rakuten_mlops.serving.console.pages import router as console_router
from rakuten_mlops.serving.db_health import DatabaseHealth, is_unavailable
from rakuten_mlops.serving.errors import add_exception_handlers
from rakuten_mlops.serving.logs import configure_service_logging, stop_service_logging
from rakuten_mlops.serving.metrics import ServiceMetrics
from rakuten_mlops.serving.middleware import RequestContextMiddleware
from rakuten_mlops.serving.prediction.batcher import MicroBatcher
from rakuten_mlops.serving.prediction.model_manager import ModelManager
from rakuten_mlops.serving.prediction.predictor import PredictionService
from rakuten_mlops.serving.prediction.recorder import PredictionRecorder
from rakuten_mlops.serving.prediction.reloading import poll_registry, start_reload

logger = logging.getLogger(__name__)

DESCRIPTION = """
Classifies Rakuten France products (French title, optional description and image) into the
27 product type codes, records every prediction, takes reviewers' corrections, and serves
champion / challenger models from the MLflow registry.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service application (nothing is loaded until the lifespan starts)."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    batcher = MicroBatcher(
        settings.microbatch_max_size,
        settings.microbatch_max_wait_ms / 1000,
        settings.microbatch_concurrency,
    )
    models = ModelManager(settings)
    models.add_listener(lambda manager, ok: _update_model_metrics(manager, ok, metrics))

    app = FastAPI(
        title="Rakuten product classification service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.docs_enabled() else None,
    )
    settings = install_security(app, settings)  # with the secrets generated for a dev run
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.models = models
    app.state.background = set()
    add_exception_handlers(app)
    include_api(app)
    install_docs(app, settings)
    app.include_router(console_router)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, batcher=batcher)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_service_logging(settings.log_level, settings.log_file)
    if settings.num_threads > 0 and not settings.model_process:  # else the model process's
        import torch

        torch.set_num_threads(settings.num_threads)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    health = DatabaseHealth(app.state.metrics.db_up, settings.db_retry_after_s)
    app.state.db_health = health
    recorder = PredictionRecorder(
        session_factory,
        flush_interval_s=settings.record_flush_ms / 1000,
        batch_size=settings.record_batch_size,
        image_store_dir=settings.image_store_dir,
        queue_max=settings.record_queue_max,
        spool_dir=settings.record_spool_dir,
        on_write=lambda error, started: _note_write(health, error, started),
    )
    predictor = PredictionService(
        settings, app.state.models, app.state.batcher, recorder, app.state.metrics
    )
    app.state.engine = engine
    # Drift and online-quality gauges on the same /metrics, read from the database lazily.
    monitoring = register_monitoring_metrics(engine, app.state.metrics.registry, settings)
    app.state.session_factory = session_factory
    app.state.principals.watch(session_factory)  # user / key changes drop cached callers
    app.state.recorder = recorder
    app.state.predictor = predictor
    # Migrations, the first admin (refuses to start without one), the online accuracy and the
    # records spooled during an outage. With the database unreachable the service starts
    # anyway (predictions for callers it can check, 503 for the rest) and does these when
    # the database answers.
    database_ready = asyncio.Event()
    try:
        await asyncio.to_thread(_start_database_work, app)
        database_ready.set()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        health.failed(exc.__cause__ or exc)
    starting = asyncio.create_task(_finish_database_work(app, database_ready))
    await asyncio.to_thread(start_metrics_port, app)
    watcher = asyncio.create_task(health.watch(engine, settings.db_probe_s))
    recorder.start()
    app.state.batcher.start()
    # What start-up made (modules, settings, the app) lives as long as the process: out of
    # the garbage collector's sight, a full collection no longer pauses every request in
    # flight for tens of milliseconds.
    gc.collect()
    gc.freeze()
    loading = start_reload(app)
    if settings.wait_for_model_s > 0:
        # The port opens once the first load is over, loaded or not (no champion yet: 503).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(loading), settings.wait_for_model_s)
    poller = None
    if settings.reload_poll_s > 0:
        poller = asyncio.create_task(poll_registry(app, settings.reload_poll_s))
    logger.info("service started", extra={"model": settings.serve_model, "version": __version__})
    try:
        yield
    finally:
        for task in (poller, watcher, starting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await app.state.batcher.stop()
        await asyncio.to_thread(app.state.models.close)  # model processes, after the last call
        await asyncio.to_thread(recorder.close)
        await stop_security(app)
        app.state.metrics.registry.unregister(monitoring)
        engine.dispose()
        logger.info("service stopped", extra={"records_written": recorder.written})
        stop_service_logging()


def _start_database_work(app: FastAPI) -> None:
    """What start-up needs the database for (blocking): migrate, the first admin, the online
    accuracy, the records spooled during an outage."""
    settings: Settings = app.state.settings
    upgrade_database(settings.database_url)
    start_security(app)
    with app.state.session_factory() as session:
        app.state.predictor.restore_online_accuracy(crud.latest_feedback_outcomes(session))
    app.state.recorder.replay_spool()
    app.state.db_health.succeeded()


async def _finish_database_work(app: FastAPI, done: asyncio.Event) -> None:
    """Retry the start-up's database work until the database answers (when it did not at
    start-up)."""
    health: DatabaseHealth = app.state.db_health
    while not done.is_set():
        await asyncio.sleep(app.state.settings.db_probe_s)
        try:
            await asyncio.to_thread(_start_database_work, app)
        except Exception as exc:
            cause = exc.__cause__ or exc
            if not is_unavailable(exc):
                logger.exception("start-up database work failed; retrying")
            health.failed(cause)
            continue
        logger.info("start-up database work done")
        done.set()


def _note_write(health: DatabaseHealth, error: BaseException | None, started: float) -> None:
    if error is None:
        health.succeeded(started)
    elif is_unavailable(error):
        health.failed(error, started)


def _update_model_metrics(manager: ModelManager, succeeded: bool, metrics: ServiceMetrics) -> None:
    metrics.model_reloads.labels("success" if succeeded else "failure").inc()
    if not succeeded:
        return
    metrics.model_info.clear()
    for model in (manager.champion, manager.challenger):
        if model is None:
            continue
        metrics.model_info.labels(
            model.variant, model.name, model.version or "", model.alias or "", model.run_id or ""
        ).set(1)
        metrics.model_loaded_timestamp.labels(model.variant).set(model.loaded_at.timestamp())
