"""The console's queries on PostgreSQL (the installed 15 cluster, a throwaway database)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console_testing import sign_in
from rakuten_mlops.config import Settings
from service_testing import postgres_cluster_port, run_as_postgres, stored_feedback


@pytest.fixture
def console_postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database and role (the cluster is started when it is down)."""
    if shutil.which("pg_ctlcluster") is None:
        pytest.fail("PostgreSQL 15 is not installed (scripts/install-system-deps.sh installs it)")
    if postgres_cluster_port() is None:
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=False)
    port = postgres_cluster_port()
    if port is None:
        pytest.fail("cannot start the PostgreSQL 15 cluster")
    name, password = f"rakuten_console_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    created = run_as_postgres(
        "psql", "-p", str(port), "-v", "ON_ERROR_STOP=1",
        "-c", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
        "-c", f"CREATE DATABASE {name} OWNER {name}",
    )  # fmt: skip
    if created.returncode != 0:
        pytest.fail(f"cannot create a PostgreSQL database: {created.stderr}")
    yield f"postgresql+psycopg://{name}:{password}@127.0.0.1:{port}/{name}"
    run_as_postgres(
        "psql", "-p", str(port),
        "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        "-c", f"DROP ROLE IF EXISTS {name}",
    )  # fmt: skip


def test_queue_review_undo_and_model_page_on_postgres(
    start_console: Callable[..., TestClient],
    console_settings: Callable[..., Settings],
    classify: Callable[..., dict[str, Any]],
    console_postgres_url: str,
) -> None:
    client = start_console(console_settings(database_url=console_postgres_url))
    made = [classify(client, f"Tente de camping {i}") for i in range(3)]
    csrf = sign_in(client, "rita")
    queue = client.get("/console/queue?order=confidence")
    assert re.search(r'id="left-count">3<', queue.text)
    response = client.post(
        f"/console/queue/{made[0]['prediction_id']}",
        data={"prdtypecode": "2583", "csrf_token": csrf},
        headers={"X-Console-Fragment": "1"},
    )
    assert re.search(r'id="done-today">1<', response.text)
    assert re.search(r'id="left-count">2<', response.text)
    (row,) = stored_feedback(client)
    assert (row.prdtypecode, row.username, row.previous_code) == (
        2583,
        "rita",
        made[0]["prdtypecode"],
    )
    assert "<svg" in client.get("/console/model").text
    undone = client.post(
        "/console/history/undo", data={"feedback_id": str(row.id), "csrf_token": csrf}
    )
    assert undone.status_code == 303
    assert re.search(r'id="left-count">3<', client.get("/console/queue").text)
    assert "undone" in client.get("/console/history").text
