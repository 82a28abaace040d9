"""Data-access functions of the review console: queue, progress, history, undo, accuracy,
reviewer agreement and the audit trail.

Corrections themselves are written by `crud.add_feedback` (through the service layer's
`record_review`), never here: the console reads, and undoes its users' own corrections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from rakuten_mlops.db.crud import DoubleReview
from rakuten_mlops.db.models import Feedback, Prediction

# value: what a review is worth (module `serving/services/review_day.py`): predictions on
# which champion and challenger disagree, then second reviews, then the least confident.
QueueOrder = Literal["value", "oldest", "confidence"]


@dataclass(frozen=True)
class QueueFilters:
    """Filters of the review queue (None: no filter).

    `reviewer`: whose queue it is; it then also holds the second reviews drawn from other
    reviewers' decisions (never their own).
    """

    prdtypecode: int | None = None
    day: date | None = None
    order: QueueOrder = "value"
    reviewer: str | None = None


@dataclass(frozen=True)
class Correction:
    """One correction as the history shows it."""

    feedback: Feedback
    prediction: Prediction


@dataclass(frozen=True)
class DailyAccuracy:
    """Online accuracy of one UTC day: the share of corrected predictions that were right."""

    day: date
    reviewed: int
    correct: int

    @property
    def accuracy(self) -> float:
        """correct / reviewed (0 when nothing was reviewed)."""
        return self.correct / self.reviewed if self.reviewed else 0.0


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC start of `day` and of the next day."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _active_feedback_of_prediction(
    *kinds: str, by: str | None = None, not_by: str | None = None
) -> ColumnElement[bool]:
    """A feedback row in force on the prediction (of these kinds, by / not by this user)."""
    conditions = [Feedback.prediction_id == Prediction.id, Feedback.undone_at.is_(None)]
    if kinds:
        conditions.append(Feedback.kind.in_(kinds))
    if by is not None:
        conditions.append(Feedback.username == by)
    if not_by is not None:
        conditions.append(or_(Feedback.username.is_(None), Feedback.username != not_by))
    return exists().where(and_(*conditions))


def _second_review_open(reviewer: str) -> ColumnElement[bool]:
    """Drawn for a second review, first-reviewed by someone else, not yet second-reviewed."""
    return and_(
        Prediction.second_review.is_(True),
        _active_feedback_of_prediction("review", not_by=reviewer),
        ~_active_feedback_of_prediction("review", by=reviewer),
        ~_active_feedback_of_prediction("second", "settle"),
    )


def challenger_disagrees() -> ColumnElement[bool]:
    """The challenger's shadow answer to the same product of the same request differs."""
    shadow = aliased(Prediction)
    return exists().where(
        shadow.shadow.is_(True),
        shadow.request_id == Prediction.request_id,
        shadow.designation == Prediction.designation,
        shadow.prdtypecode != Prediction.prdtypecode,
    )


def _queue_statement(statement: Select[Any], filters: QueueFilters) -> Select[Any]:
    waiting: ColumnElement[bool] = and_(
        Prediction.needs_review.is_(True), ~_active_feedback_of_prediction()
    )
    if filters.reviewer is not None:
        waiting = or_(waiting, _second_review_open(filters.reviewer))
    statement = statement.where(Prediction.shadow.is_(False), waiting)
    if filters.prdtypecode is not None:
        statement = statement.where(Prediction.prdtypecode == filters.prdtypecode)
    if filters.day is not None:
        start, end = day_bounds(filters.day)
        statement = statement.where(Prediction.created_at >= start, Prediction.created_at < end)
    return statement


def _ordering(filters: QueueFilters) -> tuple[Any, ...]:
    if filters.order == "oldest":
        return (Prediction.created_at, Prediction.id)
    if filters.order == "confidence":
        return (Prediction.confidence, Prediction.created_at, Prediction.id)
    ranks: list[tuple[ColumnElement[bool], int]] = [(challenger_disagrees(), 0)]
    if filters.reviewer is not None:
        ranks.append((_second_review_open(filters.reviewer), 1))
    # Lowest confidence first: the most probable error, and under weighted F1 every
    # product's error weighs the same (docs/service.md, "What a review is worth").
    return (case(*ranks, else_=2), Prediction.confidence, Prediction.created_at, Prediction.id)


def review_queue(
    session: Session, filters: QueueFilters, *, limit: int = 20, offset: int = 0
) -> tuple[Sequence[Prediction], int]:
    """A page of predictions waiting for review and how many wait in all.

    Waiting: not a shadow prediction, and either flagged `needs_review` with no correction
    in force, or (for `filters.reviewer`) drawn for a second review (`_second_review_open`).
    Ordered by value (`_ordering`), oldest first, or least confident first (then oldest).
    """
    total = session.scalar(_queue_statement(select(func.count()).select_from(Prediction), filters))
    rows = session.scalars(
        _queue_statement(select(Prediction), filters)
        .order_by(*_ordering(filters))
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, int(total or 0)


def challenger_codes(session: Session, predictions: Sequence[Prediction]) -> dict[str, int]:
    """The challenger's shadow code for each of these predictions that has one."""
    keys = {(str(p.request_id), p.designation): p.id for p in predictions if p.request_id}
    if not keys:
        return {}
    rows = session.execute(
        select(Prediction.request_id, Prediction.designation, Prediction.prdtypecode).where(
            Prediction.shadow.is_(True),
            Prediction.request_id.in_({request for request, _ in keys}),
        )
    ).all()
    return {
        keys[(str(request), title)]: int(code)
        for request, title, code in rows
        if (str(request), title) in keys
    }


def corrections_on(session: Session, day: date) -> int:
    """Corrections in force made on `day` (UTC) on flagged predictions: the day's progress."""
    start, end = day_bounds(day)
    statement = (
        select(func.count())
        .select_from(Feedback)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .where(
            Feedback.undone_at.is_(None),
            Feedback.created_at >= start,
            Feedback.created_at < end,
            Prediction.needs_review.is_(True),
        )
    )
    return int(session.scalar(statement) or 0)


@dataclass(frozen=True)
class ReviewDayFacts:
    """What the predictions of one UTC day became, for the review budget panel.

    Attributes:
        predictions: answered (not shadow) predictions of the day.
        reviewed: those with a review in force.
        auto_accepted / auto_confidence: not flagged, not reviewed; and the sum of their
            confidences (the expected number right, the confidence being calibrated).
        waiting / waiting_confidence: flagged, not reviewed yet; the same sum.
        reviews: reviews in force made that day (any prediction), and the first and last
            time one was made.
    """

    predictions: int
    reviewed: int
    auto_accepted: int
    auto_confidence: float
    waiting: int
    waiting_confidence: float
    reviews: int
    first_review_at: datetime | None
    last_review_at: datetime | None


def review_day_facts(session: Session, day: date) -> ReviewDayFacts:
    """The counts behind the budget panel for `day` (UTC)."""
    start, end = day_bounds(day)
    reviewed = _active_feedback_of_prediction()
    auto = and_(~reviewed, Prediction.needs_review.is_(False))
    waiting = and_(~reviewed, Prediction.needs_review.is_(True))
    row = session.execute(
        select(
            func.count(),
            func.sum(case((reviewed, 1), else_=0)),
            func.sum(case((auto, 1), else_=0)),
            func.sum(case((auto, Prediction.confidence), else_=0.0)),
            func.sum(case((waiting, 1), else_=0)),
            func.sum(case((waiting, Prediction.confidence), else_=0.0)),
        ).where(
            Prediction.shadow.is_(False),
            Prediction.created_at >= start,
            Prediction.created_at < end,
        )
    ).one()
    # `UtcDateTime` reads the times back as aware UTC, their min and max too.
    reviews = session.execute(
        select(func.count(), func.min(Feedback.created_at), func.max(Feedback.created_at)).where(
            Feedback.undone_at.is_(None), Feedback.created_at >= start, Feedback.created_at < end
        )
    ).one()
    return ReviewDayFacts(
        predictions=int(row[0] or 0),
        reviewed=int(row[1] or 0),
        auto_accepted=int(row[2] or 0),
        auto_confidence=float(row[3] or 0.0),
        waiting=int(row[4] or 0),
        waiting_confidence=float(row[5] or 0.0),
        reviews=int(reviews[0] or 0),
        first_review_at=reviews[1],
        last_review_at=reviews[2],
    )


def list_corrections(
    session: Session, *, username: str | None = None, limit: int = 20, offset: int = 0
) -> tuple[list[Correction], int]:
    """Corrections (undone ones too), newest first, with their predictions, and the total."""
    conditions = [] if username is None else [Feedback.username == username]
    total = session.scalar(select(func.count()).select_from(Feedback).where(*conditions))
    rows = session.execute(
        select(Feedback, Prediction)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .where(*conditions)
        .order_by(Feedback.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [Correction(feedback, prediction) for feedback, prediction in rows], int(total or 0)


def last_correction_of(session: Session, username: str) -> Feedback | None:
    """The latest correction of `username` still in force (what undo would undo)."""
    return session.scalar(
        select(Feedback)
        .where(Feedback.username == username, Feedback.undone_at.is_(None))
        .order_by(Feedback.id.desc())
        .limit(1)
    )


class UndoError(ValueError):
    """The correction is not the user's latest one in force."""


def undo_correction(session: Session, username: str, feedback_id: int) -> Feedback:
    """Undo `username`'s latest correction (flushed; the caller commits).

    Raises:
        UndoError: `feedback_id` is not that correction (someone else's, older, or undone).
    """
    last = last_correction_of(session, username)
    if last is None or last.id != feedback_id:
        raise UndoError("only your own latest correction can be undone")
    last.undone_at = datetime.now(UTC)
    session.flush()
    return last


def daily_accuracy(session: Session, since: datetime) -> list[DailyAccuracy]:
    """Online accuracy per UTC day from the corrections in force made since `since`.

    A correction counts as "right" when its code equals the predicted one (a reviewer
    accepted the prediction); the latest correction of a prediction decides.
    """
    latest = (
        select(func.max(Feedback.id).label("id"))
        .where(Feedback.undone_at.is_(None), Feedback.created_at >= since)
        .group_by(Feedback.prediction_id)
        .subquery()
    )
    rows = session.execute(
        select(Feedback.created_at, Feedback.prdtypecode, Prediction.prdtypecode)
        .join(latest, latest.c.id == Feedback.id)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
    ).all()
    days: dict[date, list[int]] = {}
    for created_at, label, predicted in rows:
        moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
        counts = days.setdefault(moment.astimezone(UTC).date(), [0, 0])
        counts[0] += 1
        counts[1] += int(int(label) == int(predicted))
    return [DailyAccuracy(day, n, ok) for day, (n, ok) in sorted(days.items())]


def latest_drift_run(session: Session) -> dict[str, Any] | None:
    """The newest `monitor drift` run as a dict of its columns (None before the first)."""
    from rakuten_mlops.db.crud_monitoring import latest_drift_run as newest
    from rakuten_mlops.db.models import DriftRun

    run = newest(session)
    if run is None:
        return None
    return {column.key: getattr(run, column.key) for column in DriftRun.__table__.columns}


def double_reviews(session: Session) -> list[DoubleReview]:
    """Every prediction with a second review in force, oldest first."""
    seconds = (
        select(Feedback.prediction_id)
        .where(Feedback.kind == "second", Feedback.undone_at.is_(None))
        .scalar_subquery()
    )
    rows = session.execute(
        select(Feedback, Prediction)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .where(Feedback.undone_at.is_(None), Feedback.prediction_id.in_(seconds))
        .order_by(Feedback.id)
    ).all()
    latest: dict[str, dict[str, Feedback]] = {}
    predictions: dict[str, Prediction] = {}
    for feedback, prediction in rows:
        latest.setdefault(prediction.id, {})[feedback.kind] = feedback
        predictions[prediction.id] = prediction
    reviews = (DoubleReview.of(predictions[key], kinds) for key, kinds in latest.items())
    return [review for review in reviews if review is not None]


AUDIT_COLUMNS = (
    "feedback_id",
    "created_at",
    "username",
    "kind",
    "prediction_id",
    "predicted_at",
    "model_name",
    "model_version",
    "variant",
    "predicted_code",
    "before_code",
    "after_code",
    "undone_at",
)


def audit_rows(session: Session) -> list[tuple[Any, ...]]:
    """Every review decision ever recorded (undone ones too), oldest first: who, when, on
    which model's prediction, code before -> after. Rows are never deleted, only undone."""
    rows = session.execute(
        select(Feedback, Prediction)
        .join(Prediction, Prediction.id == Feedback.prediction_id)
        .order_by(Feedback.id)
    ).all()
    return [
        (
            feedback.id,
            _iso(feedback.created_at),
            feedback.username or "",
            feedback.kind,
            prediction.id,
            _iso(prediction.created_at),
            prediction.model_name,
            prediction.model_version or "",
            prediction.variant,
            prediction.prdtypecode,
            "" if feedback.previous_code is None else feedback.previous_code,
            feedback.prdtypecode,
            _iso(feedback.undone_at),
        )
        for feedback, prediction in rows
    ]


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""
