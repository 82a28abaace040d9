"""Background reloads: on demand (`POST /v1/admin/reload`) and when registry aliases move."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from fastapi import FastAPI

from rakuten_mlops.serving.prediction.model_manager import ModelManager, ReloadStatus

logger = logging.getLogger(__name__)


def start_reload(app: FastAPI) -> asyncio.Task[object]:
    """Reload the models in a thread (one at a time); returns the task to await if wanted."""
    running: asyncio.Task[object] | None = getattr(app.state, "reload_task", None)
    if running is not None and not running.done():
        return running
    models: ModelManager = app.state.models
    models.status = ReloadStatus(state="running", started_at=datetime.now(UTC))
    task: asyncio.Task[object] = asyncio.create_task(asyncio.to_thread(models.reload))
    app.state.reload_task = task
    return task


async def poll_registry(app: FastAPI, interval_s: float) -> None:
    """Reload when the registry aliases move (RAKUTEN_RELOAD_POLL_S > 0)."""
    models: ModelManager = app.state.models
    while True:
        await asyncio.sleep(interval_s)
        try:
            if await asyncio.to_thread(models.alias_moved):
                logger.info("registry alias moved: reloading")
                await start_reload(app)
        except Exception:
            logger.exception("registry poll failed")
