"""Small data-access functions of the prediction service (predictions, feedback)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from rakuten_mlops.db.models import Feedback, Prediction


@dataclass(frozen=True)
class PredictionFilters:
    """Filters of the prediction list (None: no filter)."""

    needs_review: bool | None = None
    prdtypecode: int | None = None
    variant: str | None = None
    since: datetime | None = None
    include_shadow: bool = False
    username: str | None = None


def get_prediction(session: Session, prediction_id: str) -> Prediction | None:
    """The prediction with this id, None when unknown."""
    return session.get(Prediction, prediction_id)


def _filtered(statement: Select[Any], filters: PredictionFilters) -> Select[Any]:
    if not filters.include_shadow:
        statement = statement.where(Prediction.shadow.is_(False))
    if filters.needs_review is not None:
        statement = statement.where(Prediction.needs_review.is_(filters.needs_review))
    if filters.prdtypecode is not None:
        statement = statement.where(Prediction.prdtypecode == filters.prdtypecode)
    if filters.variant is not None:
        statement = statement.where(Prediction.variant == filters.variant)
    if filters.since is not None:
        statement = statement.where(Prediction.created_at >= filters.since)
    if filters.username is not None:
        statement = statement.where(Prediction.username == filters.username)
    return statement


def list_predictions(
    session: Session, filters: PredictionFilters, *, limit: int = 50, offset: int = 0
) -> tuple[Sequence[Prediction], int]:
    """A page of predictions, newest first, and the total that match the filters."""
    total = session.scalar(_filtered(select(func.count()).select_from(Prediction), filters)) or 0
    rows = session.scalars(
        _filtered(select(Prediction), filters)
        .order_by(Prediction.created_at.desc(), Prediction.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, int(total)


def latest_corrections(session: Session, prediction_ids: Sequence[str]) -> dict[str, Feedback]:
    """The correction in force (latest, not undone) of each of these predictions that has one."""
    if not prediction_ids:
        return {}
    rows = session.scalars(
        select(Feedback)
        .where(Feedback.prediction_id.in_(list(prediction_ids)), Feedback.undone_at.is_(None))
        .order_by(Feedback.id)
    ).all()
    return {row.prediction_id: row for row in rows}  # later ids overwrite earlier ones


def add_feedback(
    session: Session,
    prediction_id: str,
    prdtypecode: int,
    username: str | None,
    *,
    kind: str = "review",
) -> Feedback:
    """Store the correct code of a prediction (flushed; the caller commits).

    `previous_code` keeps the code in force before it (the latest correction still in
    force, else the predicted code), for the console's history and undo. `kind`: see
    `begin_review`.
    """
    feedback = Feedback(
        prediction_id=prediction_id,
        prdtypecode=prdtypecode,
        username=username,
        previous_code=code_in_force(session, prediction_id),
        kind=kind,
    )
    session.add(feedback)
    session.flush()
    return feedback


@dataclass(frozen=True)
class DoubleReview:
    """A prediction reviewed twice: the first and the blind second decision, and an admin's
    settling decision when there is one (every code the latest in force of its kind)."""

    prediction: Prediction
    first_user: str | None
    first_code: int
    second_user: str | None
    second_code: int
    settled_code: int | None = None
    settled_by: str | None = None

    @classmethod
    def of(cls, prediction: Prediction, latest: Mapping[str, Feedback]) -> DoubleReview | None:
        """From a prediction's latest review in force of each kind; None without both a
        first and a second review (none yet, or one undone: nothing to compare)."""
        first, second, settle = latest.get("review"), latest.get("second"), latest.get("settle")
        if first is None or second is None:
            return None
        return cls(
            prediction=prediction,
            first_user=first.username,
            first_code=first.prdtypecode,
            second_user=second.username,
            second_code=second.prdtypecode,
            settled_code=settle.prdtypecode if settle else None,
            settled_by=settle.username if settle else None,
        )

    @property
    def agree(self) -> bool:
        """Both reviewers chose the same code."""
        return self.first_code == self.second_code

    @property
    def needs_settling(self) -> bool:
        """The reviewers disagree and no admin has settled it yet."""
        return not self.agree and self.settled_code is None


def begin_review(
    session: Session,
    prediction: Prediction,
    username: str | None,
    *,
    admin: bool,
    second_share: float,
) -> str:
    """What a new review of `prediction` by `username` is, read from the reviews in force.

    - "settle": an admin decides a prediction whose two reviewers disagree;
    - "second": the blind second review of a prediction drawn for one, by another reviewer;
    - "review": anything else (a first review, or a reviewer changing their own decision).

    A first review (none in force) also draws whether the prediction goes to a second
    reviewer (`draws_second_review`, with `second_share`), and marks it (the caller commits).
    """
    active = session.scalars(
        select(Feedback)
        .where(Feedback.prediction_id == prediction.id, Feedback.undone_at.is_(None))
        .order_by(Feedback.id)
    ).all()
    if not active and draws_second_review(prediction.id, second_share):
        prediction.second_review = True
    latest = {row.kind: row for row in active}
    double = DoubleReview.of(prediction, latest)
    if admin and double is not None and double.needs_settling:
        return "settle"
    if (
        prediction.second_review
        and "second" not in latest
        and "settle" not in latest
        and "review" in latest
        and all(row.username != username for row in active if row.kind == "review")
    ):
        return "second"
    return "review"


def draws_second_review(prediction_id: str, share: float) -> bool:
    """Whether a prediction goes to a second reviewer (a stable draw on its id)."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"second-review\x00{prediction_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < share


def code_in_force(session: Session, prediction_id: str) -> int | None:
    """The latest correction of a prediction that is not undone, else its predicted code."""
    corrected = session.scalar(
        select(Feedback.prdtypecode)
        .where(Feedback.prediction_id == prediction_id, Feedback.undone_at.is_(None))
        .order_by(Feedback.id.desc())
        .limit(1)
    )
    if corrected is not None:
        return int(corrected)
    predicted = session.scalar(select(Prediction.prdtypecode).where(Prediction.id == prediction_id))
    return int(predicted) if predicted is not None else None


def latest_feedback_outcomes(session: Session, limit: int = 500) -> list[tuple[str, bool]]:
    """(variant, correct) of the latest feedback rows, oldest first (online accuracy)."""
    rows = session.execute(
        select(Prediction.variant, Prediction.prdtypecode, Feedback.prdtypecode)
        .join(Feedback, Feedback.prediction_id == Prediction.id)
        .where(Feedback.undone_at.is_(None))
        .order_by(Feedback.id.desc())
        .limit(limit)
    ).all()
    return [(str(variant), int(pred) == int(true)) for variant, pred, true in reversed(rows)]


def predictions_with_feedback(
    session: Session, since: datetime | None = None
) -> list[dict[str, object]]:
    """Every prediction (shadow ones too) with its latest feedback code (None without)."""
    latest = (
        select(Feedback.prediction_id, func.max(Feedback.id).label("feedback_id"))
        .where(Feedback.undone_at.is_(None))
        .group_by(Feedback.prediction_id)
        .subquery()
    )
    statement = (
        select(Prediction, Feedback.prdtypecode)
        .outerjoin(latest, latest.c.prediction_id == Prediction.id)
        .outerjoin(Feedback, Feedback.id == latest.c.feedback_id)
    )
    if since is not None:
        statement = statement.where(Prediction.created_at >= since)
    out: list[dict[str, object]] = []
    for prediction, label in session.execute(statement).all():
        out.append(
            {
                "id": prediction.id,
                "request_id": prediction.request_id,
                "productid": prediction.productid,
                "designation": prediction.designation,
                "variant": prediction.variant,
                "shadow": prediction.shadow,
                "model_version": prediction.model_version,
                "prdtypecode": prediction.prdtypecode,
                "confidence": prediction.confidence,
                "latency_ms": prediction.latency_ms,
                "created_at": prediction.created_at,
                "label": label,
            }
        )
    return out
