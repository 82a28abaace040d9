"""Prediction records written off the request path, in batches, by one writer thread.

Requests hand their rows to `record` (a list append under a lock) and answer at once; the
writer inserts what has accumulated every `flush_interval_s` (or sooner when `batch_size`
rows wait), in one transaction. `close` writes everything left, so a clean shutdown
(SIGTERM included: uvicorn runs the lifespan's exit) loses no answered prediction. A
failed write is retried; the rows stay queued meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rakuten_mlops.db.models import Prediction

logger = logging.getLogger(__name__)


class PredictionRecorder:
    """Buffers prediction rows and writes them in batches from a background thread."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        flush_interval_s: float = 0.2,
        batch_size: int = 256,
        image_store_dir: Path | None = None,
    ) -> None:
        self._factory = session_factory
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.image_store_dir = image_store_dir
        self._pending: list[dict[str, Any]] = []
        self._images: dict[str, bytes] = {}
        self._pending_ids: set[str] = set()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="prediction-recorder", daemon=True)
        self._thread.start()

    def image_path_for(self, sha256: str) -> str | None:
        """Where the image with this hash is (or will be) stored; None without a store."""
        if self.image_store_dir is None:
            return None
        return str(self.image_store_dir / sha256[:2] / f"{sha256}.jpg")

    def record(self, rows: list[dict[str, Any]], images: dict[str, bytes] | None = None) -> None:
        """Queue prediction rows (and image files to store, by sha256) for writing."""
        with self._lock:
            self._pending.extend(rows)
            self._pending_ids.update(row["id"] for row in rows)
            if images and self.image_store_dir is not None:
                self._images.update(images)
            full = len(self._pending) >= self.batch_size
        if full:
            self._wake.set()

    def is_pending(self, prediction_id: str) -> bool:
        """Whether a prediction is answered but not yet in the database."""
        with self._lock:
            return prediction_id in self._pending_ids

    @property
    def backlog(self) -> int:
        """Rows waiting to be written."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every queued row now (blocking); returns the number written.

        Raises:
            SQLAlchemyError: the database refused the rows (they stay queued).
        """
        with self._write_lock:
            with self._lock:
                rows, self._pending = self._pending, []
                images, self._images = self._images, {}
            if not rows:
                return 0
            try:
                self._store_images(images)
                self._insert(rows)
            except BaseException:
                with self._lock:  # keep them, in order, for the next attempt
                    self._pending = rows + self._pending
                    self._images.update(images)
                raise
            with self._lock:
                self._pending_ids.difference_update(row["id"] for row in rows)
            self.written += len(rows)
            return len(rows)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert in one transaction; rows the database refuses are dropped one by one.

        A row the database cannot store (a value it rejects) must not block every later
        record: it is logged and skipped. Connection problems propagate (rows are kept).
        """
        try:
            with self._factory() as session, session.begin():
                session.execute(insert(Prediction), rows)
            return
        except (DataError, IntegrityError):
            pass
        for row in rows:
            try:
                with self._factory() as session, session.begin():
                    session.execute(insert(Prediction), [row])
            except (DataError, IntegrityError) as exc:
                self.dropped += 1
                logger.error(
                    "prediction record refused by the database; dropped",
                    extra={"prediction_id": row.get("id"), "error": str(exc.orig)[:300]},
                )

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the writer and write what is left (retrying until `timeout_s`)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.backlog:
            try:
                self.flush()
            except SQLAlchemyError as exc:
                if time.monotonic() > deadline:
                    logger.error(
                        "prediction records could not be written at shutdown",
                        extra={"rows": self.backlog, "error": str(exc)},
                    )
                    return
                time.sleep(0.2)

    def _run(self) -> None:
        delay = self.flush_interval_s
        while not self._stopping.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            try:
                self.flush()
                delay = self.flush_interval_s
            except SQLAlchemyError as exc:
                delay = min(max(delay * 2, 0.5), 10.0)
                logger.warning(
                    "prediction records not written yet; retrying",
                    extra={"rows": self.backlog, "error": str(exc), "retry_in_s": delay},
                )
            except Exception:
                logger.exception("prediction recorder failed; retrying")
                delay = 1.0

    def _store_images(self, images: dict[str, bytes]) -> None:
        for sha256, data in images.items():
            path_text = self.image_path_for(sha256)
            if path_text is None:
                return
            path = Path(path_text)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
