"""The service store on SQLite and PostgreSQL: migrations, records, feedback, queries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from rakuten_mlops.cli import app as cli_app
from rakuten_mlops.config import Settings, get_settings
from rakuten_mlops.db.migrate import alembic_config, upgrade_database
from rakuten_mlops.db.session import DatabaseError, make_engine
from service_testing import app_of, stored_feedback, stored_predictions


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def head_revision() -> str | None:
    """The latest migration of `db/migrations/versions` (each area adds one)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_migrations_create_the_tables_once(database_url: str) -> None:
    assert head_revision() >= "0002"
    assert upgrade_database(database_url) == head_revision()
    assert upgrade_database(database_url) == head_revision()  # idempotent
    engine = make_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"predictions", "feedback", "users", "api_keys", "alembic_version"} <= tables
        columns = {c["name"] for c in inspect(engine).get_columns("predictions")}
        assert {"username", "variant", "shadow", "top3", "image_sha256"} <= columns
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_replicas_starting_together_migrate_an_empty_postgresql_database_once(
    postgres_url: str,
) -> None:
    # Two API replicas started at once used to race on CREATE TABLE (one crashed on a duplicate
    # key in pg_type, or they waited on each other); the migrating transaction now holds an
    # advisory lock. Separate processes, as replicas are, killed if they hang.
    import subprocess
    import sys

    code = "import sys; from rakuten_mlops.db.migrate import upgrade_database as u; print(u(sys.argv[1]))"
    replicas = [
        subprocess.Popen([sys.executable, "-c", code, postgres_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    try:
        outputs = [replica.communicate(timeout=90) for replica in replicas]
    finally:
        for replica in replicas:
            replica.kill()
    assert [out.strip() for out, _ in outputs] == [head_revision()] * 4, outputs
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_predictions_and_feedback_round_trip(
    database_url: str,
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    jpeg_bytes: bytes,
) -> None:
    client = start_client(make_settings(database_url=database_url))
    answers = []
    titles = ["Piscine gonflable ronde", "Roman de poche", "Carte pokemon"]
    for i, title in enumerate(titles):
        files = {"image": ("a.jpg", jpeg_bytes, "image/jpeg")} if i == 0 else None
        response = client.post("/v1/predict", data={"designation": title}, files=files)
        answers.append(response.json())
    batch = client.post("/v1/predict/batch", json={"items": [{"designation": "Chat collier"}]})
    assert batch.json()["succeeded"] == 1
    feedback = client.post(
        "/v1/feedback", json={"prediction_id": answers[1]["prediction_id"], "prdtypecode": 2705}
    )
    assert feedback.status_code == 201 and feedback.json()["correct"] is False
    records = stored_predictions(client)
    assert len(records) == 4
    first = next(r for r in records if r.id == answers[0]["prediction_id"])
    assert first.has_image and first.top3[0]["code"] == answers[0]["prdtypecode"]
    assert first.created_at.tzinfo is not None  # aware UTC on SQLite too
    (row,) = stored_feedback(client)
    assert (row.prediction_id, row.prdtypecode) == (answers[1]["prediction_id"], 2705)
    page = client.get("/v1/predictions", params={"limit": 3}).json()
    assert page["total"] == 4 and len(page["items"]) == 3
    assert any(r.designation == "Carte pokemon" for r in records)
    # NUL is refused at the API (tests/api/test_hostile_input.py), never stored.
    for title in ("\x00 ", "Carte\x00 pokemon"):
        refused = client.post("/v1/predict", data={"designation": title})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "designation"


def test_a_row_the_database_refuses_does_not_block_the_others(
    database_url: str,
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
) -> None:
    client = start_client(make_settings(database_url=database_url))
    answer = client.post("/v1/predict", data={"designation": "Roman"}).json()
    recorder = app_of(client).state.recorder
    recorder.flush()
    row = {**stored_predictions(client)[0].__dict__}
    row.pop("_sa_instance_state")
    # The same id again (refused), then a good row: only the good one waits no longer.
    recorder.record([row, {**row, "id": "b" * 32}])
    assert recorder.flush() == 2
    assert recorder.dropped == 1 and recorder.backlog == 0
    ids = {r.id for r in stored_predictions(client)}
    assert ids == {answer["prediction_id"], "b" * 32}


def test_db_upgrade_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/service.db"
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli_app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"revision {head_revision()}" in result.output
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", "nonsense://")
    get_settings.cache_clear()
    bad = CliRunner().invoke(cli_app, ["db", "upgrade"])
    assert bad.exit_code != 0 and "RAKUTEN_DATABASE_URL" in bad.output
    with pytest.raises(DatabaseError):
        make_engine("not a url")
