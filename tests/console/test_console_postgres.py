"""The console's queries on PostgreSQL (the installed 15 cluster, a throwaway database)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console_testing import sign_in
from rakuten_mlops.config import Settings
from service_testing import started_postgres_port, stored_feedback, throwaway_postgres_database


@pytest.fixture
def console_postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database and role (the cluster is started when it is down)."""
    with throwaway_postgres_database(started_postgres_port(), "rakuten_console") as url:
        yield url


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
