"""The real `rakuten-mlops serve` process over HTTP: predictions, reload under traffic,
no record lost on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import select

from rakuten_mlops.db.models import Prediction
from rakuten_mlops.db.session import make_engine, make_session_factory
from service_testing import ServerProcess, TinyModel

pytestmark = pytest.mark.slow  # real server processes


def server_env(tmp_path: Path, model: Path) -> dict[str, str]:
    return {
        "RAKUTEN_DATABASE_URL": f"sqlite:///{tmp_path}/service.db",
        "RAKUTEN_SERVE_MODEL": str(model),
        "RAKUTEN_LOG_FILE": str(tmp_path / "logs" / "service.log"),
        "RAKUTEN_RECORD_FLUSH_MS": "100",
        "RAKUTEN_NUM_THREADS": "1",
        # As in production: the model predicts in a process of its own.
        "RAKUTEN_MODEL_PROCESS": "true",
        "RAKUTEN_MODEL_RETIRE_S": "1",
    }


def model_processes(server: ServerProcess) -> set[int]:
    """PIDs of the serve process's model processes (not multiprocessing's resource tracker)."""
    pids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def stored_ids(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return set(session.scalars(select(Prediction.id)))
    finally:
        engine.dispose()


def assert_clean_exit(server: ServerProcess) -> None:
    """SIGTERM, then uvicorn's graceful shutdown to the end (it re-raises the signal)."""
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log.read_text()


class Traffic:
    """Threads that keep predicting until stopped; they count answers and failures."""

    def __init__(self, url: str, headers: dict[str, str], threads: int = 4) -> None:
        self.url = url
        self.headers = headers
        self.ok_ids: list[str] = []
        self.failures: list[str] = []
        self.transport_errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        self._lock = threading.Lock()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, headers=self.headers) as http:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    response = http.post(
                        "/v1/predict",
                        data={
                            "designation": f"Piscine gonflable {worker}-{i}",
                            "productid": str(i),
                        },
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.transport_errors += 1
                    if self._stop.wait(0.05):
                        return
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.ok_ids.append(response.json()["prediction_id"])
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")


def test_serve_answers_over_http(
    start_server: Callable[..., ServerProcess],
    tiny_model: TinyModel,
    tmp_path: Path,
    jpeg_bytes: bytes,
) -> None:
    # --model wins over RAKUTEN_SERVE_MODEL (here a path that does not exist).
    env = server_env(tmp_path, tmp_path / "no-such-model")
    server = start_server(env, "--model", str(tiny_model.path))
    with httpx.Client(base_url=server.url, timeout=30, headers=server.headers) as http:
        text = http.post("/v1/predict", data={"designation": "Roman de poche"}).json()
        image = http.post(
            "/v1/predict",
            data={"designation": "Piscine gonflable"},
            files={"image": ("a.jpg", jpeg_bytes, "image/jpeg")},
            headers={"X-Request-ID": "over-http"},
        )
        assert image.headers["x-request-id"] == "over-http"
        assert image.json()["has_image"] is True and text["prdtypecode"] == 10
        feedback = http.post(
            "/v1/feedback", json={"prediction_id": text["prediction_id"], "prdtypecode": 10}
        )
        assert feedback.status_code == 201
        metrics = http.get("/metrics").text
        assert (
            'rakuten_http_requests_total{method="POST",route="/v1/predict",status="200"} 2.0'
            in metrics
        )
        docs = http.get("/openapi.json").json()
        assert "/v1/predict/batch" in docs["paths"]
        # The model's libraries live in the model process only (memory of one worker).
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and model_processes(server)
    assert_clean_exit(server)
    assert len(stored_ids(f"sqlite:///{tmp_path}/service.db")) == 2
    log = (tmp_path / "logs" / "service.log").read_text()
    assert '"request_id": "over-http"' in log and '"route": "/v1/predict"' in log
    assert "\\xff\\xd8" not in log and "ÿØ" not in log  # no image bytes in the logs


def test_reload_under_traffic_fails_no_request(
    start_server: Callable[..., ServerProcess], tiny_model: TinyModel, tmp_path: Path
) -> None:
    server = start_server(server_env(tmp_path, tiny_model.path))
    with (
        httpx.Client(base_url=server.url, timeout=60, headers=server.headers) as http,
        Traffic(server.url, server.headers) as traffic,
    ):
        first = http.get("/v1/model").json()["loaded_at"]
        before = model_processes(server)
        assert before, "the model predicts in a process of its own"
        time.sleep(0.5)
        for _ in range(2):
            reload = http.post("/v1/admin/reload", params={"wait": True})
            assert reload.json()["state"] == "succeeded", reload.text
        time.sleep(0.5)
        traffic.stop()
        assert http.get("/v1/model").json()["loaded_at"] != first
        # The replaced models' processes stop RAKUTEN_MODEL_RETIRE_S after the swap.
        deadline = time.monotonic() + 30
        while model_processes(server) & before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not model_processes(server) & before
        assert model_processes(server)
    assert traffic.failures == [] and traffic.transport_errors == 0
    assert len(traffic.ok_ids) > 20


def test_sigterm_under_load_loses_no_answered_prediction(
    start_server: Callable[..., ServerProcess], tiny_model: TinyModel, tmp_path: Path
) -> None:
    env = server_env(tmp_path, tiny_model.path)
    env["RAKUTEN_RECORD_FLUSH_MS"] = "5000"  # records still queued when the signal comes
    server = start_server(env)
    children = [psutil.Process(pid) for pid in model_processes(server)]
    assert children
    with Traffic(server.url, server.headers) as traffic:
        time.sleep(1.5)
        assert_clean_exit(server)
    assert traffic.failures == []
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []  # no model process outlives the service
    assert len(traffic.ok_ids) > 10
    assert set(traffic.ok_ids) <= stored_ids(env["RAKUTEN_DATABASE_URL"])
