"""Review routing in the service: the queue ordered by value, the review day (budget,
estimated catalogue accuracy, one more hour), blind second reviews, kappa, settling and the
audit trail."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import cohen_kappa_score

from console_testing import sign_in
from rakuten_mlops.config import Settings
from rakuten_mlops.data.feedback_export import read_reviewed_feedback
from rakuten_mlops.db import crud, crud_console
from rakuten_mlops.db.crud import DoubleReview
from rakuten_mlops.db.crud_console import QueueFilters
from rakuten_mlops.db.models import Prediction
from rakuten_mlops.serving.services.agreement import (
    cohen_kappa,
    open_disagreements,
    pair_agreement,
)
from rakuten_mlops.serving.services.review_day import review_day
from service_records import ServiceRecords
from service_testing import stored_feedback

Classify = Callable[..., dict[str, Any]]
DAY = datetime(2026, 11, 1, tzinfo=UTC).date()  # ServiceRecords' clock starts on this day


@pytest.fixture
def records(tmp_path: Path) -> ServiceRecords:
    made = ServiceRecords(tmp_path / "service.db")
    made.add_user("remi", "reviewer")
    yield made
    made.close()


def product(title: str) -> dict[str, Any]:
    return {"designation": title, "description": "", "productid": None, "imageid": None}


def test_value_order_puts_disagreements_then_second_reviews_then_least_confident(
    records: ServiceRecords,
) -> None:
    sure = records.add_prediction(product("Piscine"), code=2583, confidence=0.45)
    unsure = records.add_prediction(product("Objet"), code=1280, confidence=0.20)
    disputed = records.add_prediction(
        product("Lampe"), code=2060, confidence=0.48, request_id="req-1"
    )
    # The challenger's shadow answer to the same product of the same request differs.
    records.add_prediction(
        product("Lampe"),
        code=1560,
        confidence=0.6,
        request_id="req-1",
        shadow=True,
        variant="challenger",
    )
    checked = records.add_prediction(product("Livre"), code=2705, second_review=True)
    records.add_feedback(checked, 2705, "rita")
    agreed = records.add_prediction(product("Jouet"), code=1280, confidence=0.3, request_id="r2")
    records.add_prediction(
        product("Jouet"),
        code=1280,
        confidence=0.3,
        request_id="r2",
        shadow=True,
        variant="challenger",
    )
    with records.sessions() as session:

        def ids(**kwargs: Any) -> list[str]:
            rows, total = crud_console.review_queue(session, QueueFilters(**kwargs))
            assert total == len(rows)
            return [row.id for row in rows]

        assert ids(order="value", reviewer="remi") == [disputed, checked, unsure, agreed, sure]
        # Nobody second-reviews their own decision; without a reviewer, first reviews only.
        assert ids(order="value", reviewer="rita") == [disputed, unsure, agreed, sure]
        assert ids(order="value") == [disputed, unsure, agreed, sure]
        assert ids(order="oldest") == [sure, unsure, disputed, agreed]
        shown = session.query(Prediction).filter(Prediction.id.in_([disputed, agreed])).all()
        assert crud_console.challenger_codes(session, shown) == {disputed: 1560, agreed: 1280}


def test_review_day_estimates_catalogue_accuracy_and_the_next_hour(
    records: ServiceRecords,
) -> None:
    # Auto-accepted at 0.9 and 0.8, one reviewed, two waiting at 0.3 and 0.1.
    records.add_prediction(product("a"), needs_review=False, confidence=0.9)
    records.add_prediction(product("b"), needs_review=False, confidence=0.8)
    reviewed = records.add_prediction(product("c"), confidence=0.4)
    records.add_feedback(reviewed, 10, "rita")
    records.add_prediction(product("d"), confidence=0.3)
    records.add_prediction(product("e"), confidence=0.1)
    with records.sessions() as session:
        day = review_day(session, DAY, budget=50)
    assert (day.done, day.budget, day.budget_left, day.predictions) == (1, 50, 49, 5)
    assert day.estimated_accuracy == pytest.approx((0.9 + 0.8 + 1 + 0.3 + 0.1) / 5)
    assert (day.auto_share, day.reviewed_share, day.waiting) == (0.4, 0.2, 2)
    assert not day.rate_measured  # one review is not a rate
    assert day.hour_reviews == 2  # the whole queue fits in an hour
    assert day.hour_fixes == pytest.approx(0.7 + 0.9)
    assert day.hour_gain == pytest.approx(1.6 / 5)
    # With the rule's measured precision, the auto-accepted count at it, not at confidence.
    with records.sessions() as session:
        measured = review_day(session, DAY, budget=0, auto_precision=0.5)
    assert measured.estimated_accuracy == pytest.approx((2 * 0.5 + 1 + 0.3 + 0.1) / 5)
    assert measured.budget_left is None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([10, 10, 40, 40, 50, 10], [10, 40, 40, 40, 50, 50]),
        ([1, 2, 3, 1, 2, 3, 1], [1, 2, 3, 3, 2, 1, 1]),
        ([5, 5, 6], [6, 6, 5]),
    ],
)
def test_cohen_kappa_matches_scikit_learn(first: list[int], second: list[int]) -> None:
    assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second))


def test_kappa_per_pair_and_class() -> None:
    def review(a: str, ca: int, b: str, cb: int) -> DoubleReview:
        return DoubleReview(Prediction(id=f"{a}{ca}{b}{cb}"), a, ca, b, cb)

    reviews = [
        review("rita", 10, "remi", 10),
        review("remi", 40, "rita", 40),  # the pair is the same whichever reviewed first
        review("rita", 40, "remi", 10),
        review("rita", 50, "remi", 50),
        review("rita", 10, "ann", 10),
    ]
    pairs = pair_agreement(reviews)
    assert [p.reviewers for p in pairs] == [("remi", "rita"), ("ann", "rita")]
    main = pairs[0]
    assert (main.n, main.agreed) == (4, 3)
    assert main.kappa == pytest.approx(cohen_kappa_score([10, 40, 10, 50], [10, 40, 40, 50]))
    by_code = {c.code: c for c in main.classes}
    assert (by_code[10].n, by_code[10].agreed) == (2, 1)
    assert by_code[50].kappa == pytest.approx(1.0)
    assert main.classes[0].code in (10, 40)  # least agreed first
    assert math.isclose(pairs[1].kappa, 1.0)
    assert open_disagreements(reviews) == [reviews[2]]


def test_second_review_kappa_settle_audit_and_export_through_the_console(
    start_console: Callable[..., TestClient],
    console_settings: Callable[..., Settings],
    classify: Classify,
) -> None:
    client = start_console(console_settings(review_second_share=1.0, review_budget_per_day=40))
    made = [classify(client, title) for title in ("Piscine ronde", "Cartouche d'encre")]
    csrf = sign_in(client, "rita")
    page = client.get("/console/queue")
    assert re.search(r'id="budget-done">0 / 40<', page.text)
    assert "estimated right" in page.text and "reviews would fix about" in page.text
    for item in made:  # rita accepts both; each is drawn for a second review
        client.post(
            f"/console/queue/{item['prediction_id']}",
            data={"prdtypecode": str(item["prdtypecode"]), "csrf_token": csrf},
        )
    assert "Nothing to review" in client.get("/console/queue").text  # not her own
    csrf = sign_in(client, "remi")
    page = client.get("/console/queue")
    assert re.search(r'id="left-count">2<', page.text) and 'id="second-review"' in page.text
    assert re.search(r'id="budget-done">2 / 40<', page.text)
    other = 2522 if made[1]["prdtypecode"] != 2522 else 2403
    for item, code in ((made[0], made[0]["prdtypecode"]), (made[1], other)):
        client.post(
            f"/console/queue/{item['prediction_id']}",
            data={"prdtypecode": str(code), "csrf_token": csrf},
        )
    assert [r.kind for r in stored_feedback(client)] == ["review", "review", "second", "second"]
    agreement = client.get("/console/agreement")
    assert "remi · rita" in agreement.text
    assert agreement.text.count('data-prediction-id="') == 1  # the disagreement
    assert "/console/audit.csv" not in agreement.text  # admins only
    assert client.get("/console/audit.csv").status_code == 403

    csrf = sign_in(client, "admin")
    agreement = client.get("/console/agreement")
    assert made[1]["prediction_id"] in agreement.text
    settled = client.post(
        f"/console/agreement/{made[1]['prediction_id']}",
        data={"prdtypecode": str(other), "csrf_token": csrf},
    )
    assert settled.status_code == 303
    assert "No open disagreement" in client.get("/console/agreement").text
    audit = client.get("/console/audit.csv")
    assert audit.status_code == 200 and audit.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(audit.text)))
    assert [r["kind"] for r in rows] == ["review", "review", "second", "second", "settle"]
    last = rows[-1]
    assert (last["username"], last["before_code"], last["after_code"]) == (
        "admin",
        str(other),
        str(other),
    )
    assert last["model_version"] == "" and last["predicted_code"] == str(made[1]["prdtypecode"])

    # The export learns from first reviews and settled codes, never from second reviews.
    url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    exported, _ = read_reviewed_feedback(url)
    assert len(exported) == 3
    assert exported["prdtypecode"].tolist()[-1] == other


def test_a_second_review_is_drawn_stably_at_the_configured_share() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    drawn = [crud.draws_second_review(i, 0.1) for i in ids]
    assert 0.08 < sum(drawn) / len(ids) < 0.12
    assert drawn == [crud.draws_second_review(i, 0.1) for i in ids]
    assert not any(crud.draws_second_review(i, 0.0) for i in ids)


def test_the_model_page_chart_draws_the_curve_and_the_rule() -> None:
    from rakuten_mlops.serving.console.charts import coverage_chart

    svg = str(coverage_chart([(1.0, 0.8), (0.6, 0.95), (0.2, 1.0)], rule=(0.63, 0.953)))
    assert svg.startswith("<svg") and svg.count("<polyline") == 1
    assert "review rule: 95.3% right at 63% auto-accepted" in svg
    assert "No precision-coverage curve" in str(coverage_chart([]))
