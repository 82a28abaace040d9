"""Data access of the monitoring: prediction windows, labelled predictions, drift runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Select, and_, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from rakuten_mlops.db.models import DriftRun, Feedback, Prediction
from rakuten_mlops.db.session import (
    DatabaseError,
    database_error_reason,
    make_session_factory,
    redact_database_url,
)
from rakuten_mlops.schema import RECORD_COLUMNS

# Columns of `production_inputs` (what the drift check compares with the reference).
INPUT_COLUMNS = (
    "created_at",
    "designation",
    "description",
    "has_image",
    "prdtypecode",
    "confidence",
    "variant",
    "model_version",
)
# Columns of `labelled_predictions`: the records the online quality reads.
QUALITY_COLUMNS = RECORD_COLUMNS


def production_inputs(session: Session, start: datetime, end: datetime) -> pd.DataFrame:
    """The answered predictions of [start, end) (shadow predictions repeat an input: left out)."""
    statement = (
        select(*(getattr(Prediction, c) for c in INPUT_COLUMNS))
        .where(Prediction.created_at >= start, Prediction.created_at < end)
        .where(Prediction.shadow.is_(False))
        .order_by(Prediction.created_at)
    )
    return pd.DataFrame(session.execute(statement).all(), columns=list(INPUT_COLUMNS))


def _latest_feedback() -> Any:
    latest = (
        select(Feedback.prediction_id, func.max(Feedback.id).label("feedback_id"))
        .where(Feedback.undone_at.is_(None))  # an undone correction labels nothing
        .group_by(Feedback.prediction_id)
        .subquery()
    )
    return latest


def _quality_select(labelled_only: bool) -> Select[*tuple[Any, ...]]:
    latest = _latest_feedback()
    join = Feedback.id == latest.c.feedback_id
    statement = select(
        Prediction.id,
        Prediction.request_id,
        Prediction.productid,
        Prediction.designation,
        Prediction.variant,
        Prediction.model_version,
        Prediction.shadow,
        Prediction.prdtypecode,
        Prediction.confidence,
        Feedback.prdtypecode,
    )
    if labelled_only:
        return statement.join(latest, latest.c.prediction_id == Prediction.id).join(Feedback, join)
    return statement.outerjoin(latest, latest.c.prediction_id == Prediction.id).outerjoin(
        Feedback, join
    )


def labelled_predictions(
    session: Session, start: datetime, end: datetime, *, labelled_only: bool = False
) -> pd.DataFrame:
    """Predictions of [start, end) with their latest feedback code (`true_code`, NaN if none).

    Args:
        labelled_only: only the predictions with feedback, plus the shadow predictions of
            the same requests (they share the label); enough for the quality figures and far
            fewer rows than the whole window.
    """
    window = and_(Prediction.created_at >= start, Prediction.created_at < end)
    statement = _quality_select(labelled_only).where(window)
    rows = list(session.execute(statement).all())
    if labelled_only:
        requests = {row[1] for row in rows if row[1] is not None}
        if requests:
            shadow = (
                _quality_select(False)
                .where(window, Prediction.shadow.is_(True))
                .where(Prediction.request_id.in_(sorted(requests)))
            )
            seen = {row[0] for row in rows}
            rows += [row for row in session.execute(shadow).all() if row[0] not in seen]
    frame = pd.DataFrame(rows, columns=list(QUALITY_COLUMNS))
    frame["true_code"] = pd.to_numeric(frame["true_code"], errors="coerce")
    return frame


def prediction_aggregates(session: Session, start: datetime, end: datetime) -> pd.DataFrame:
    """Per (model_version, variant, shadow): number of predictions and mean confidence."""
    statement = (
        select(
            Prediction.model_version,
            Prediction.variant,
            Prediction.shadow,
            func.count(Prediction.id),
            func.avg(Prediction.confidence),
        )
        .where(Prediction.created_at >= start, Prediction.created_at < end)
        .group_by(Prediction.model_version, Prediction.variant, Prediction.shadow)
    )
    return pd.DataFrame(
        session.execute(statement).all(),
        columns=["model_version", "variant", "shadow", "predictions", "mean_confidence"],
    )


def recent_top3(session: Session, start: datetime, end: datetime, *, limit: int) -> pd.DataFrame:
    """The latest `limit` answered predictions of [start, end): version, variant, predicted
    code and top-3 (`[{"code", "probability", ...}]`), for the performance estimate."""
    statement = (
        select(
            Prediction.model_version, Prediction.variant, Prediction.prdtypecode, Prediction.top3
        )
        .where(Prediction.created_at >= start, Prediction.created_at < end)
        .where(Prediction.shadow.is_(False))
        .order_by(Prediction.created_at.desc())
        .limit(limit)
    )
    return pd.DataFrame(
        session.execute(statement).all(),
        columns=["model_version", "variant", "prdtypecode", "top3"],
    )


def add_drift_run(session: Session, **values: Any) -> DriftRun:
    """Store a drift run (flushed; the caller commits)."""
    run = DriftRun(**values)
    session.add(run)
    session.flush()
    return run


def latest_drift_run(session: Session) -> DriftRun | None:
    """The most recent drift run, or None."""
    statement = select(DriftRun).order_by(DriftRun.created_at.desc(), DriftRun.id.desc()).limit(1)
    return session.execute(statement).scalar_one_or_none()


def read_database(engine: Engine, work: Callable[[Session], Any], *, commit: bool = False) -> Any:
    """Run `work(session)`; database errors become one clear `DatabaseError`."""
    factory = make_session_factory(engine)
    try:
        with factory() as session:
            value = work(session)
            if commit:
                session.commit()
            return value
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"service database {redact_database_url(str(engine.url))}: "
            f"{database_error_reason(exc)} (run `rakuten-mlops db upgrade` first?)"
        ) from exc
