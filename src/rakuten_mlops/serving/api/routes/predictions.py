"""Stored predictions: the reviewers' queue and what monitoring reads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from rakuten_mlops.db import crud
from rakuten_mlops.db.models import Feedback, Prediction
from rakuten_mlops.serving.deps import RecorderDep, SessionDep, require_role
from rakuten_mlops.serving.schemas import MAX_DB_INT, PredictionPage, PredictionRecord

router = APIRouter(prefix="/v1", tags=["predictions"])


@router.get(
    "/predictions",
    response_model=PredictionPage,
    dependencies=[Depends(require_role("reviewer"))],
)
def list_predictions(
    session: SessionDep,
    recorder: RecorderDep,
    needs_review: Annotated[bool | None, Query(description="Only (un)flagged ones.")] = None,
    prdtypecode: Annotated[
        int | None, Query(ge=0, le=MAX_DB_INT, description="Predicted code.")
    ] = None,
    variant: Annotated[Literal["champion", "challenger"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; UTC when no offset.")] = None,
    include_shadow: Annotated[bool, Query(description="Also silent challenger ones.")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> PredictionPage:
    """Recent predictions, newest first, filtered and paginated."""
    recorder.flush()  # include predictions answered moments ago
    filters = crud.PredictionFilters(
        needs_review=needs_review,
        prdtypecode=prdtypecode,
        variant=variant,
        since=since,
        include_shadow=include_shadow,
    )
    rows, total = crud.list_predictions(session, filters, limit=limit, offset=offset)
    corrections = crud.latest_corrections(session, [row.id for row in rows])
    return PredictionPage(
        items=[_record(row, corrections.get(row.id)) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


def _record(row: Prediction, correction: Feedback | None) -> PredictionRecord:
    record = PredictionRecord.model_validate(row)
    if correction is not None:
        record.corrected_prdtypecode = correction.prdtypecode
        record.corrected_by = correction.username
        record.corrected_at = correction.created_at
    return record
