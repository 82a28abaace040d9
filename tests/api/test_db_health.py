"""The service's view of its database: one log line per outage start and end, whatever the
order in which concurrent contacts report (`serving/db_health.py`)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from rakuten_mlops.serving.db_health import DatabaseHealth
from rakuten_mlops.serving.prediction.recorder import PredictionRecorder

CRASH = OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


@pytest.fixture
def health() -> tuple[DatabaseHealth, Gauge]:
    gauge = Gauge("db_up_test", "test", registry=CollectorRegistry())
    return DatabaseHealth(gauge), gauge


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    health: tuple[DatabaseHealth, Gauge], caplog: pytest.LogCaptureFixture
) -> None:
    state, gauge = health
    caplog.set_level(logging.INFO, logger="rakuten_mlops.serving.db_health")
    for _ in range(3):
        state.failed(CRASH)
    assert not state.up and gauge._value.get() == 0
    for _ in range(3):
        state.succeeded()
    assert state.up and gauge._value.get() == 1
    logged = messages(caplog)
    assert sum(m.startswith("service database unavailable") for m in logged) == 1
    assert logged.count("service database back") == 1


def test_a_success_that_began_before_the_outage_does_not_end_it(
    health: tuple[DatabaseHealth, Gauge], caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = health
    caplog.set_level(logging.INFO, logger="rakuten_mlops.serving.db_health")
    began = time.monotonic()  # a write starts...
    state.failed(CRASH)  # ...another thread sees the crash...
    state.succeeded(began)  # ...and the write, done before it, reports last
    assert not state.up
    state.failed(CRASH, time.monotonic())
    state.succeeded(time.monotonic())  # a contact after the crash: the database is back
    assert state.up
    logged = messages(caplog)
    assert sum(m.startswith("service database unavailable") for m in logged) == 1
    assert logged.count("service database back") == 1


def test_a_failure_that_began_during_the_outage_does_not_start_another(
    health: tuple[DatabaseHealth, Gauge], caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = health
    caplog.set_level(logging.INFO, logger="rakuten_mlops.serving.db_health")
    state.failed(CRASH)
    began = time.monotonic()  # a contact starts while the database is down...
    state.succeeded()  # ...the database comes back...
    state.failed(CRASH, began)  # ...and the old contact's failure reports last
    assert state.up
    state.failed(CRASH, time.monotonic())  # a new contact fails: a new outage
    assert not state.up
    assert sum(m.startswith("service database unavailable") for m in messages(caplog)) == 2


def test_concurrent_stale_reports_never_flap_the_state(
    health: tuple[DatabaseHealth, Gauge], caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = health
    caplog.set_level(logging.INFO, logger="rakuten_mlops.serving.db_health")
    before_outage = time.monotonic()
    state.failed(CRASH)

    def stale_successes() -> None:
        for _ in range(2000):
            state.succeeded(before_outage)

    threads = [threading.Thread(target=stale_successes) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(2000):
        state.failed(CRASH, time.monotonic())
    for thread in threads:
        thread.join()
    assert not state.up
    assert "service database back" not in messages(caplog)


def test_the_recorder_reports_only_the_writes_that_contacted_the_database() -> None:
    reports: list[tuple[BaseException | None, float]] = []
    # No database behind it: a contact would fail, and be reported as a failure.
    recorder = PredictionRecorder(
        sessionmaker(),
        flush_interval_s=0.01,
        on_write=lambda error, started: reports.append((error, started)),
    )
    recorder.start()
    time.sleep(0.2)  # a dozen wake-ups with nothing queued
    recorder.close(timeout_s=5)
    # An empty flush contacts nothing: it must not tell the service the database is back.
    assert reports == []
