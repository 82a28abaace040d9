"""Data-access functions of the review console: queue, progress, history, undo, accuracy.

Corrections themselves are written by `crud.add_feedback` (through the `POST /v1/feedback`
route function), never here: the console reads, and undoes its users' own corrections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.orm import Session

from rakuten_mlops.db.models import Feedback, Prediction

QueueOrder = Literal["oldest", "confidence"]


@dataclass(frozen=True)
class QueueFilters:
    """Filters of the review queue (None: no filter)."""

    prdtypecode: int | None = None
    day: date | None = None
    order: QueueOrder = "oldest"


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


def _active_feedback_of_prediction() -> Any:
    return exists().where(
        and_(Feedback.prediction_id == Prediction.id, Feedback.undone_at.is_(None))
    )


def _queue_statement(statement: Select[Any], filters: QueueFilters) -> Select[Any]:
    statement = statement.where(
        Prediction.needs_review.is_(True),
        Prediction.shadow.is_(False),
        ~_active_feedback_of_prediction(),
    )
    if filters.prdtypecode is not None:
        statement = statement.where(Prediction.prdtypecode == filters.prdtypecode)
    if filters.day is not None:
        start, end = day_bounds(filters.day)
        statement = statement.where(Prediction.created_at >= start, Prediction.created_at < end)
    return statement


def review_queue(
    session: Session, filters: QueueFilters, *, limit: int = 20, offset: int = 0
) -> tuple[Sequence[Prediction], int]:
    """A page of predictions waiting for review and how many wait in all.

    Waiting: flagged `needs_review`, not a shadow prediction, and no correction in force.
    Ordered oldest first, or least confident first (then oldest).
    """
    total = session.scalar(_queue_statement(select(func.count()).select_from(Prediction), filters))
    ordering = (
        (Prediction.created_at, Prediction.id)
        if filters.order == "oldest"
        else (Prediction.confidence, Prediction.created_at, Prediction.id)
    )
    rows = session.scalars(
        _queue_statement(select(Prediction), filters)
        .order_by(*ordering)
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, int(total or 0)


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
