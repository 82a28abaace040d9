"""The service keeps predicting through an outage of its database, and loses no record.

A PostgreSQL cluster of the test's own (initdb in a temporary folder, its own port) is
stopped with `pg_ctl stop -m immediate` (a crash) and started again under load.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from rakuten_mlops.cli import app as cli_app
from rakuten_mlops.config import get_settings
from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.serving.auth.cache import PrincipalCache
from rakuten_mlops.serving.auth.principals import Principal, UserState
from rakuten_mlops.serving.prediction.recorder import PredictionRecorder
from security_testing import SECURITY_ENV, login
from service_testing import CLI, TinyModel, free_port, run_as_postgres

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of one test: stop it (a crash) and start it again."""

    data: Path
    port: int
    url: str

    def stop(self) -> None:
        done = run_as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        done = run_as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log"),
            "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "-w", "start",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """initdb in a folder the postgres user owns; a `rakuten` database; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="rakuten-pg-", dir="/tmp"))
    root.chmod(0o755)
    data = root / "data"
    shutil.chown(root, "postgres", "postgres")
    made = run_as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    assert made.returncode == 0, made.stderr
    cluster = OwnPostgres(data, free_port(), "")
    cluster.start()
    created = run_as_postgres(
        "psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-c", "CREATE DATABASE rakuten"
    )
    assert created.returncode == 0, created.stderr
    cluster.url = f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/rakuten"
    try:
        yield cluster
    finally:
        run_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = cwd / f"server-{port}.log"
    full_env = {**os.environ, "RAKUTEN_ENV": "test", **SECURITY_ENV, **env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}", log


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Load:
    """Clients predicting until stopped: every answer, its status and prediction id."""

    url: str
    headers: dict[str, str]
    images: list[bytes]
    statuses: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, clients: int) -> list[threading.Thread]:
        # Daemon threads, stopped in a `finally`: a failing test must not leave clients
        # running into the next tests, nor keep the test process alive at exit.
        threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    if index % 2:  # half the clients send an image, half a batch of text
                        image = self.images[n % len(self.images)]
                        response = http.post(
                            "/v1/predict",
                            data={"designation": f"Piscine tubulaire {index}-{n}"},
                            files={"image": ("p.jpg", image, "image/jpeg")},
                        )
                        ids = (
                            [response.json()["prediction_id"]]
                            if response.status_code == 200
                            else []
                        )
                    else:
                        items = [{"designation": f"Roman {index}-{n}-{k}"} for k in range(3)]
                        response = http.post("/v1/predict/batch", json={"items": items})
                        ids = (
                            [r["prediction"]["prediction_id"] for r in response.json()["results"]]
                            if response.status_code == 200
                            else []
                        )
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.statuses.append(response.status_code)
                self.ids.extend(ids)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")


def _two_requests_on_one_connection(url: str, path: str, form: str) -> tuple[int, int]:
    """The statuses of a form POST to `path` and of a `GET /ready` sent after it on the same
    connection (http.client never reconnects by itself: a connection the server dropped
    without saying `Connection: close` fails the second request)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", path, body=form, headers=headers)
        first = connection.getresponse()
        first.read()
        time.sleep(0.3)  # a server that closes has sent its FIN by now
        connection.request("GET", "/ready")
        second = connection.getresponse()
        second.read()
        return first.status, second.status
    finally:
        connection.close()


def _stored_ids(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT id FROM predictions"))]
    finally:
        engine.dispose()


def _service_env(cluster: OwnPostgres, model: Path, spool: Path) -> dict[str, str]:
    return {
        "RAKUTEN_DATABASE_URL": cluster.url,
        "RAKUTEN_SERVE_MODEL": str(model),
        "RAKUTEN_LOG_FILE": "",
        "RAKUTEN_NUM_THREADS": "1",
        "RAKUTEN_RECORD_SPOOL_DIR": str(spool),
        "RAKUTEN_RECORD_FLUSH_MS": "100",
        "RAKUTEN_DB_PROBE_S": "0.5",
        "RAKUTEN_DB_RETRY_AFTER_S": "3",
    }


@pytest.mark.slow
def test_ten_seconds_of_database_outage_under_load_cost_no_prediction(
    own_postgres: OwnPostgres, tiny_model: TinyModel, jpeg_bytes: bytes, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    process, url, log = _serve(_service_env(own_postgres, tiny_model.path, spool), tmp_path)
    stack = contextlib.ExitStack()
    try:
        _wait(lambda: httpx.get(f"{url}/ready").status_code == 200, 120, "the service")
        with httpx.Client(base_url=url, timeout=10) as http:
            headers = login(http, "admin", SECURITY_ENV["RAKUTEN_ADMIN_PASSWORD"])
            # A reviewer known before the outage, and a token issued to them during it.
            http.post("/v1/admin/users", headers=headers,
                      json={"username": "rita", "password": "rita long password", "role": "reviewer"})  # fmt: skip
            rita = login(http, "rita", "rita long password")
            assert http.get("/v1/predictions?limit=1", headers=rita).status_code == 200
            load = Load(url, headers, [jpeg_bytes])
            threads = load.run(8)
            stack.callback(load.stop.set)
            time.sleep(3)
            own_postgres.stop()
            _wait(lambda: http.get("/ready").json()["database"] == "down", 10, "the outage")
            ready = http.get("/ready")
            assert ready.status_code == 200
            feedback = http.post("/v1/feedback", headers=headers,
                                 json={"prediction_id": "f" * 32, "prdtypecode": 10})  # fmt: skip
            assert feedback.status_code == 503, feedback.text
            assert int(feedback.headers["retry-after"]) == 3
            assert "database is unavailable" in feedback.json()["detail"]
            assert (
                http.post("/token", data={"username": "rita", "password": "x"}).status_code == 503
            )
            # ...and the 503 leaves the connection open: the next request on it is answered.
            assert _two_requests_on_one_connection(url, "/token", "username=rita&password=x") == (
                503,
                200,
            )
            stranger = http.post("/v1/predict", data={"designation": "x"},
                                 headers={"X-API-Key": "rk_000000000000_unknown"})  # fmt: skip
            assert stranger.status_code == 503 and "retry-after" in stranger.headers
            assert "rakuten_db_up 0.0" in http.get("/metrics").text
            # The known reviewer still predicts with the token they had.
            assert (
                http.post("/v1/predict", data={"designation": "Lampe"}, headers=rita).status_code
                == 200
            )
            time.sleep(7)
            own_postgres.start()
            _wait(lambda: http.get("/ready").json()["database"] == "up", 20, "the database")
            time.sleep(3)
            load.stop.set()
            for thread in threads:
                thread.join(60)
            assert "rakuten_db_up 1.0" in http.get("/metrics").text
        assert load.failures == [], load.failures[:5]
        assert len(load.ids) >= 100 and set(load.statuses) == {200}
        _wait(lambda: set(load.ids) <= set(_stored_ids(own_postgres.url)), 30, "the records")
        stored = _stored_ids(own_postgres.url)
        assert len(stored) == len(set(stored))
    finally:
        stack.close()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert sum(m.startswith("service database unavailable") for m in messages) == 1, messages
    assert messages.count("service database back") == 1


@pytest.mark.slow
def test_a_restart_during_the_outage_spools_and_replays_each_record_once(
    own_postgres: OwnPostgres, tiny_model: TinyModel, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    env = _service_env(own_postgres, tiny_model.path, spool)
    process, url, _ = _serve(env, tmp_path)
    with httpx.Client(base_url=url, timeout=10) as http:
        _wait(lambda: http.get("/ready").status_code == 200, 120, "the service")
        headers = login(http, "admin", SECURITY_ENV["RAKUTEN_ADMIN_PASSWORD"])
        before = [
            http.post("/v1/predict", data={"designation": f"Roman {i}"}, headers=headers)
            for i in range(5)
        ]
        _wait(lambda: len(_stored_ids(own_postgres.url)) == 5, 20, "the first records")
        own_postgres.stop()
        during = [
            http.post("/v1/predict", data={"designation": f"Jouet {i}"}, headers=headers)
            for i in range(20)
        ]
    assert {r.status_code for r in before + during} == {200}
    process.send_signal(signal.SIGTERM)  # stopping while the database is down: spooled
    process.wait(60)
    spooled = [line for f in spool.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(spooled) == 20
    # A new process starts while the database is still down: it serves health, not callers.
    process, url, _ = _serve(env, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            _wait(lambda: http.get("/ready").status_code == 200, 120, "the degraded start")
            assert http.get("/ready").json()["database"] == "down"
            unknown = http.post("/v1/predict", data={"designation": "x"}, headers=headers)
            assert unknown.status_code == 503 and unknown.headers["retry-after"] == "3"
            own_postgres.start()
            _wait(lambda: not any(spool.glob("*.jsonl")), 30, "the replay")
            assert http.get("/ready").json()["database"] == "up"
            assert (
                http.post("/v1/predict", data={"designation": "Lampe"}, headers=headers).status_code
                == 200
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    stored = _stored_ids(own_postgres.url)
    ids = [r.json()["prediction_id"] for r in before + during]
    assert set(ids) <= set(stored) and len(stored) == len(set(stored)) == 26


def test_spooled_records_are_written_once_even_if_replayed_twice(tmp_path: Path) -> None:
    down_url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    spool = tmp_path / "spool"
    down = PredictionRecorder(
        make_session_factory(make_engine(down_url)), spool_dir=spool, queue_max=2
    )
    rows = [_row(f"{i:032x}") for i in range(5)]
    down.record(rows)
    down.close(timeout_s=1)  # the database is down: everything goes to the spool
    assert down.spooled == 5 and down.backlog == 0
    url = f"sqlite:///{tmp_path}/service.db"
    upgrade_database(url)
    factory = make_session_factory(make_engine(url))
    up = PredictionRecorder(factory, spool_dir=spool)
    up.record([rows[0]])  # already written by a retry before the spool was read
    up.flush()
    assert up.replay_spool() == 4  # the row already there is skipped
    assert up.replay_spool() == 0 and not any(spool.iterdir())
    assert sorted(_stored_ids(url)) == [row["id"] for row in rows]


def test_the_queue_is_bounded_while_the_database_is_down(tmp_path: Path) -> None:
    down_url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    recorder = PredictionRecorder(
        make_session_factory(make_engine(down_url)),
        spool_dir=tmp_path / "spool",
        queue_max=10,
        flush_interval_s=0.05,
        batch_size=5,
    )
    recorder.start()
    try:
        recorder.record([_row(f"{i:032x}") for i in range(40)])
        _wait(lambda: recorder.backlog <= 10, 20, "the spill")
        assert recorder.spooled == 30
    finally:
        recorder.close(timeout_s=1)
    assert recorder.spooled == 40


def _row(prediction_id: str) -> dict[str, object]:
    from datetime import UTC, datetime

    return {
        "id": prediction_id, "created_at": datetime.now(UTC), "request_id": "r",
        "productid": None, "imageid": None, "designation": "Roman", "description": None,
        "has_image": False, "image_sha256": None, "image_path": None, "model_name": "m",
        "model_version": "1", "model_alias": "champion", "variant": "champion",
        "shadow": False, "prdtypecode": 10, "confidence": 0.9,
        "top3": [{"code": 10, "name": "Livre", "probability": 0.9}], "needs_review": False,
        "latency_ms": 1.0, "username": "admin",
    }  # fmt: skip


def test_last_known_callers_are_kept_for_a_bounded_time() -> None:
    cache = PrincipalCache(ttl_s=0.05, stale_s=0.3)
    cache.put("bearer:t", Principal("rita", "reviewer"), "user:rita", time.time() + 60)
    cache.put("bearer:old", Principal("rita", "reviewer"), "user:rita", time.time() + 0.1)
    cache.remember_user("rita", UserState(7, "reviewer", False, 0))
    time.sleep(0.12)
    assert cache.get("bearer:t") is None  # past the TTL: read the database again...
    assert cache.get_stale("bearer:t") is not None  # ...or, while it is down, the last state
    assert cache.get_stale("bearer:old") is None  # never past the token's expiry
    assert cache.known_user("rita") == UserState(7, "reviewer", False, 0)
    time.sleep(0.25)
    assert cache.get_stale("bearer:t") is None and cache.known_user("rita") is None


@pytest.mark.parametrize(
    ("command", "url", "expected"),
    [
        (["abtest", "report"], None, "no service database at data/service/service.db"),
        (
            ["monitor", "quality"],
            "postgresql+psycopg://rk:secret-pw@127.0.0.1:{port}/db",
            "cannot reach the service database postgresql+psycopg://rk:***@127.0.0.1",
        ),
        (
            ["users", "list"],
            "postgresql+psycopg://rk:secret-pw@127.0.0.1:{port}/db",
            "cannot migrate the service database postgresql+psycopg://rk:***@127.0.0.1",
        ),
        (["monitor", "drift", "--since", "7d"], "sqlite:///empty.db", "is not migrated"),
    ],
)
def test_commands_on_a_missing_unreachable_or_unmigrated_database_say_one_clear_line(
    command: list[str],
    url: str | None,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAKUTEN_DATABASE_URL", raising=False)
    if url is not None:
        monkeypatch.setenv("RAKUTEN_DATABASE_URL", url.format(port=free_port()))
        if url.startswith("sqlite"):
            create_engine(url).connect().close()  # an empty, unmigrated database
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, command)
    finally:
        get_settings.cache_clear()
    output = " ".join(result.output.split())
    assert result.exit_code != 0
    assert expected in output, output
    assert "Traceback" not in result.output and "secret-pw" not in result.output
    if url is None:
        assert not (tmp_path / "data").exists()  # nothing created behind the user's back
