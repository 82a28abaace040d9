"""Fixtures shared by every test folder."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# After the session, the process gets this long to exit by itself.
EXIT_GRACE_S = 120.0
_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test left running (not a daemon) would keep the process alive after the
    summary, and CI waiting until its time-out. Past EXIT_GRACE_S, the threads still running
    are printed with their stacks (to find the test that left them) and the process exits
    with the session's status."""

    def force_exit() -> None:
        main = threading.main_thread()
        left = [t.name for t in threading.enumerate() if not t.daemon and t is not main]
        print(
            f"\ntest process still running {EXIT_GRACE_S:.0f} s after the session; "
            f"threads left running: {left}; their stacks:",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(all_threads=True)
        os._exit(_exit_status)

    timer = threading.Timer(EXIT_GRACE_S, force_exit)
    timer.daemon = True
    timer.start()


def _sample_dir() -> Path:
    configured = os.environ.get("RAKUTEN_SAMPLE_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared/data/rakuten-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real labelled sample (../shared/data/rakuten-sample, or RAKUTEN_SAMPLE_DIR).

    Fails, never skips, when it is missing: these tests are part of the suite.
    """
    path = _sample_dir()
    if not (path / "X_train_update.csv").is_file():
        pytest.fail(f"shared sample not found at {path}; set RAKUTEN_SAMPLE_DIR to its location")
    return path


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep tests away from the developer's MLflow store and cached settings."""
    import mlflow
    import mlflow.tracking.fluent

    from rakuten_mlops.config import get_settings

    # MLflow keeps the last tracking/registry URI and experiment of the process in globals
    # and exported variables (`set_tracking_uri`, `set_experiment`): start every test from
    # none of them, so that the environment below is what MLflow uses.
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("RAKUTEN_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    # Apps of the tests predict in process (a model process takes seconds to start); the
    # tests of the model processes and the real `serve` processes turn them on.
    monkeypatch.setenv("RAKUTEN_MODEL_PROCESS", "false")
    get_settings.cache_clear()
