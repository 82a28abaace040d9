"""Whether the service database answers, and what the service does while it does not.

Predictions need no database (records are queued and spooled, callers are known from the
auth cache), so an outage of the service database degrades the service instead of breaking
it: routes that need the database answer 503 with `Retry-After`, `/ready` says
`"database": "down"` while staying 200 for prediction traffic, `rakuten_db_up` is 0, and
the log says once when the outage starts and once when it ends.

Many threads contact the database at once (requests, the recorder, the probe), and a contact
is reported when it ends: one that began before the state changed says nothing of the new
state (a write that succeeded just before a crash, reported after another thread saw the
crash, must not end the outage). So a report may carry when its contact began.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from prometheus_client import Gauge
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from rakuten_mlops.errors import RakutenError

logger = logging.getLogger(__name__)


class DatabaseUnavailableError(RakutenError):
    """The service database cannot be reached now (the service answers 503)."""


def is_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc`, or the error it wraps (`raise ... from`), says the database cannot be
    reached (not that a statement is wrong)."""
    for error in (exc, exc.__cause__ if exc is not None else None):
        if isinstance(error, DatabaseUnavailableError | OperationalError | InterfaceError):
            return True
        if isinstance(error, PoolTimeoutError):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
    return False


class DatabaseHealth:
    """The database's state as the service last saw it (thread-safe)."""

    def __init__(self, gauge: Gauge | None = None, retry_after_s: int = 5) -> None:
        self.retry_after_s = retry_after_s
        self._gauge = gauge
        self._lock = threading.Lock()
        self._up = True
        self._down_since: float | None = None
        # When the state last changed (monotonic): older contacts do not change it back.
        self._changed_at = float("-inf")
        if gauge is not None:
            gauge.set(1)

    @property
    def up(self) -> bool:
        """Whether the last contact with the database succeeded."""
        return self._up

    def failed(self, exc: BaseException, started: float | None = None) -> None:
        """A contact failed: the outage starts (logged once).

        Args:
            exc: what the contact raised.
            started: `time.monotonic()` when the contact began (None: now); a contact that
                began before the database came back does not start a new outage.
        """
        with self._lock:
            if not self._up or (started is not None and started < self._changed_at):
                return
            self._up = False
            self._down_since = self._changed_at = time.monotonic()
        if self._gauge is not None:
            self._gauge.set(0)
        logger.error(
            "service database unavailable: predictions go on, records are kept for later",
            extra={"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"},
        )

    def succeeded(self, started: float | None = None) -> None:
        """A contact succeeded: an outage ends (logged once).

        Args:
            started: `time.monotonic()` when the contact began (None: now); a contact that
                began before the outage started does not end it.
        """
        with self._lock:
            if self._up or (started is not None and started < self._changed_at):
                return
            self._up = True
            self._changed_at = time.monotonic()
            lasted = self._changed_at - (self._down_since or self._changed_at)
            self._down_since = None
        if self._gauge is not None:
            self._gauge.set(1)
        logger.info("service database back", extra={"outage_s": round(lasted, 1)})

    def probe(self, engine: Engine) -> bool:
        """`SELECT 1` on the database; records and returns whether it answered."""
        started = time.monotonic()
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            self.failed(exc, started)
            return False
        self.succeeded(started)
        return True

    async def watch(self, engine: Engine, interval_s: float) -> None:
        """Probe every `interval_s` seconds (until cancelled)."""
        while True:
            await asyncio.to_thread(self.probe, engine)
            await asyncio.sleep(interval_s)
