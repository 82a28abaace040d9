"""Prediction records written off the request path, in batches, by one writer thread.

Requests hand their rows to `record` (a list append under a lock) and answer at once; the
writer inserts what has accumulated every `flush_interval_s` (or sooner when `batch_size`
rows wait), in one transaction. `close` writes everything left, so a clean shutdown
(SIGTERM included: uvicorn runs the lifespan's exit) loses no answered prediction. A
failed write is retried; the rows stay queued meanwhile.

While the database is down the queue is bounded (`queue_max`): the rows beyond it, and
every row left at a shutdown during the outage, are appended to a spool file (one JSON row
a line, fsynced) in `spool_dir`. Spool files are written to the database as soon as it
answers again, at start-up too, and then removed; a row already there (same prediction id)
is skipped, so each answered prediction is stored exactly once. Each process appends to a
file of its own under an exclusive lock, so the workers of one service can share the folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rakuten_mlops.db.models import Prediction

logger = logging.getLogger(__name__)
SPOOL_SUFFIX = ".jsonl"


class PredictionRecorder:
    """Buffers prediction rows and writes them in batches from a background thread."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        flush_interval_s: float = 0.2,
        batch_size: int = 256,
        image_store_dir: Path | None = None,
        queue_max: int = 50_000,
        spool_dir: Path | None = None,
        on_write: Callable[[BaseException | None, float], None] | None = None,
    ) -> None:
        self._factory = session_factory
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.image_store_dir = image_store_dir
        self.queue_max = queue_max
        self.spool_dir = spool_dir
        # Told of each write attempt that contacted the database: None when it succeeded, the
        # error otherwise, and when the attempt began (`time.monotonic()`).
        self._on_write = on_write
        self._spool_path = (
            spool_dir / f"records-{os.getpid()}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
            if spool_dir is not None
            else None
        )
        self.spooled = 0
        self.replayed = 0
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
        if full:  # also when the queue is over queue_max: the writer spills the excess
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
        """Stop the writer and write what is left; when the database refuses (an outage),
        spool it instead (without a spool folder: retry until `timeout_s`)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.backlog:
            try:
                self.flush()
            except SQLAlchemyError as exc:
                if self._spool_path is not None:
                    try:
                        self.spill(keep=0)
                    except OSError as spool_error:
                        logger.error(
                            "prediction records could be neither written nor spooled",
                            extra={"rows": self.backlog, "error": str(spool_error)},
                        )
                        return
                    logger.warning(
                        "service database unavailable at shutdown: records spooled",
                        extra={"rows": self.spooled, "spool": str(self._spool_path)},
                    )
                    return
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
            started = time.monotonic()
            try:
                if self.flush():  # nothing queued: no contact, nothing to tell
                    self._written_ok(started)
                if self.spool_dir is not None and self._spool_waiting():
                    self.replay_spool()
                delay = self.flush_interval_s
            except SQLAlchemyError as exc:
                if self._on_write is not None:
                    self._on_write(exc, started)
                if self.backlog > self.queue_max:
                    try:
                        self.spill(keep=self.queue_max)
                    except OSError as spool_error:  # rows stay queued; said once per retry
                        logger.error(
                            "cannot spool prediction records",
                            extra={"spool": str(self._spool_path), "error": str(spool_error)},
                        )
                delay = min(max(delay * 2, 0.5), 5.0)
                logger.warning(
                    "prediction records not written yet; retrying",
                    extra={"rows": self.backlog, "error": str(exc), "retry_in_s": delay},
                )
            except Exception:
                logger.exception("prediction recorder failed; retrying")
                delay = 1.0

    def _written_ok(self, started: float) -> None:
        if self._on_write is not None:
            self._on_write(None, started)

    # Spool ------------------------------------------------------------------------------

    def spill(self, keep: int) -> int:
        """Move the oldest queued rows to this process's spool file, keeping the newest
        `keep` in memory; returns the number spooled (0 without a spool folder)."""
        if self._spool_path is None:
            return 0
        with self._write_lock:
            with self._lock:
                cut = max(0, len(self._pending) - keep)
                rows, self._pending = self._pending[:cut], self._pending[cut:]
                images, self._images = self._images, {}
            if not rows:
                return 0
            try:
                self._store_images(images)  # the image store needs no database
                _append_locked(self._spool_path, [_encode(row) for row in rows])
            except BaseException:
                with self._lock:
                    self._pending = rows + self._pending
                raise
            with self._lock:
                self._pending_ids.difference_update(row["id"] for row in rows)
        self.spooled += len(rows)
        return len(rows)

    def _spool_waiting(self) -> bool:
        assert self.spool_dir is not None
        return self.spool_dir.is_dir() and any(self.spool_dir.glob(f"*{SPOOL_SUFFIX}"))

    def replay_spool(self) -> int:
        """Write every spool file of the folder to the database (rows already there are
        skipped), then remove it; returns the rows written. A file another live process is
        appending to is left for later.

        Raises:
            SQLAlchemyError: the database refused (the files stay).
        """
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return 0
        written = 0
        for path in sorted(self.spool_dir.glob(f"*{SPOOL_SUFFIX}")):
            written += self._replay_file(path)
        if written:
            self.replayed += written
            logger.info("spooled prediction records written", extra={"rows": written})
        return written

    def _replay_file(self, path: Path) -> int:
        try:
            handle = path.open("r+", encoding="utf-8")
        except FileNotFoundError:
            return 0
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if path != self._spool_path:
                    return 0  # being appended to by another process
                fcntl.flock(handle, fcntl.LOCK_EX)
            rows = [_decode(line) for line in handle if line.strip()]
            written = 0
            for start in range(0, len(rows), 500):
                chunk = rows[start : start + 500]
                with self._factory() as session:
                    ids = [row["id"] for row in chunk]
                    present = set(
                        session.scalars(select(Prediction.id).where(Prediction.id.in_(ids)))
                    )
                missing = [row for row in chunk if row["id"] not in present]
                if missing:
                    self._insert(missing)
                    written += len(missing)
            path.unlink()  # under the lock: an appender that waited reopens a new file
        return written

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


def _encode(row: dict[str, Any]) -> str:
    return json.dumps(
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()},
        ensure_ascii=False,
    )


def _decode(line: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(line)
    if isinstance(row.get("created_at"), str):
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


def _append_locked(path: Path, lines: list[str]) -> None:
    """Append `lines` to `path` under an exclusive lock, fsynced; if a replayer removed the
    file while this waited for the lock, a new one is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with path.open("a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue  # removed by a replay meanwhile: open the new file
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
            return
