"""POST /v1/feedback and GET /v1/predictions with a TestClient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from rakuten_mlops.db.models import Feedback
from rakuten_mlops.db.session import make_engine, make_session_factory
from service_testing import app_of, stored_feedback


def predict(client: TestClient, designation: str, **data: str) -> dict[str, object]:
    response = client.post("/v1/predict", data={"designation": designation, **data})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_feedback_is_committed_before_the_answer(client: TestClient) -> None:
    # Sent at once: the prediction record may still be queued; it must be found.
    prediction = predict(client, "Piscine gonflable ronde")
    response = client.post(
        "/v1/feedback", json={"prediction_id": prediction["prediction_id"], "prdtypecode": 10}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["predicted_code"] == prediction["prdtypecode"]
    assert body["correct"] is (prediction["prdtypecode"] == 10)
    assert body["username"] == "admin" and body["variant"] == "champion"
    # Visible from another connection (committed), linked to the prediction.
    engine = make_engine(str(app_of(client).state.settings.database_url))
    with make_session_factory(engine)() as session:
        (row,) = session.scalars(select(Feedback))
        assert (row.prediction_id, row.prdtypecode) == (prediction["prediction_id"], 10)
    engine.dispose()
    metrics = client.get("/metrics").text
    correct = "true" if body["correct"] else "false"
    assert f'rakuten_feedback_total{{correct="{correct}",variant="champion"}} 1.0' in metrics
    expected_accuracy = 1.0 if body["correct"] else 0.0
    assert f'rakuten_online_accuracy{{variant="champion"}} {expected_accuracy}' in metrics


def test_feedback_errors_name_the_field(client: TestClient) -> None:
    prediction = predict(client, "Roman de poche")
    unknown = client.post("/v1/feedback", json={"prediction_id": "f" * 32, "prdtypecode": 10})
    assert unknown.status_code == 404 and "prediction_id" in unknown.json()["detail"]
    for code in (7, "abc", None):
        bad = client.post(
            "/v1/feedback", json={"prediction_id": prediction["prediction_id"], "prdtypecode": code}
        )
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "prdtypecode"
    missing = client.post("/v1/feedback", json={"prdtypecode": 10})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "prediction_id"
    assert stored_feedback(client) == []


def test_predictions_filters_and_pages(client: TestClient) -> None:
    titles = ["Piscine gonflable", "Roman de poche", "Carte pokemon holo", "Housse couette", "x"]
    answers = [predict(client, title) for title in titles]
    page = client.get("/v1/predictions", params={"limit": 2})
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 5 and len(body["items"]) == 2
    # Newest first, and the next page continues without overlap.
    second = client.get("/v1/predictions", params={"limit": 2, "offset": 2}).json()
    ids = [item["id"] for item in body["items"] + second["items"]]
    assert len(set(ids)) == 4
    assert body["items"][0]["id"] == answers[-1]["prediction_id"]

    code = answers[0]["prdtypecode"]
    by_code = client.get("/v1/predictions", params={"prdtypecode": code}).json()
    assert by_code["total"] == sum(a["prdtypecode"] == code for a in answers)
    flagged = client.get("/v1/predictions", params={"needs_review": True}).json()
    assert flagged["total"] == sum(bool(a["needs_review"]) for a in answers)
    assert all(item["needs_review"] for item in flagged["items"])
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/v1/predictions", params={"since": future}).json()["total"] == 0
    assert client.get("/v1/predictions", params={"variant": "challenger"}).json()["total"] == 0
    item = body["items"][0]
    assert item["designation"] == "x" and len(item["top3"]) == 3


def test_predictions_bad_query_is_422(client: TestClient) -> None:
    for params, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 10_000}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"variant": "third"}, "variant"),
        ({"needs_review": "maybe"}, "needs_review"),
    ]:
        response = client.get("/v1/predictions", params=params)
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["field"] == field


def test_predictions_show_the_correction_in_force(client: TestClient) -> None:
    first = predict(client, "Piscine gonflable ronde")
    second = predict(client, "Roman de poche")
    for code in (10, 2705):  # corrected twice: the latest wins
        response = client.post(
            "/v1/feedback", json={"prediction_id": first["prediction_id"], "prdtypecode": code}
        )
        assert response.status_code == 201, response.text
    items = {item["id"]: item for item in client.get("/v1/predictions").json()["items"]}
    corrected, untouched = items[first["prediction_id"]], items[second["prediction_id"]]
    assert corrected["corrected_prdtypecode"] == 2705
    assert corrected["corrected_by"] == "admin" and corrected["corrected_at"] is not None
    assert untouched["corrected_prdtypecode"] is None and untouched["corrected_by"] is None
    # An undone correction (review console) leaves the one before it in force.
    with app_of(client).state.session_factory() as session:
        latest = session.scalars(select(Feedback).where(Feedback.prdtypecode == 2705)).one()
        latest.undone_at = datetime.now(UTC)
        session.commit()
    items = {item["id"]: item for item in client.get("/v1/predictions").json()["items"]}
    assert items[first["prediction_id"]]["corrected_prdtypecode"] == 10
