"""Corrections from reviewers: the correct code of a prediction, stored before answering."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from rakuten_mlops.db import crud
from rakuten_mlops.serving.deps import (
    CurrentPrincipal,
    PredictorDep,
    RecorderDep,
    SessionDep,
    require_role,
)
from rakuten_mlops.serving.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post(
    "/feedback",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackResponse,
    dependencies=[Depends(require_role("reviewer"))],
    responses={
        404: {"model": ErrorResponse, "description": "Unknown prediction id."},
        422: {"model": ErrorResponse, "description": "Invalid body; `errors` names the field."},
    },
)
def post_feedback(
    body: FeedbackRequest,
    session: SessionDep,
    recorder: RecorderDep,
    predictor: PredictorDep,
    principal: CurrentPrincipal,
) -> FeedbackResponse:
    """Store the correct code of a prediction (committed before the answer)."""
    if recorder.is_pending(body.prediction_id):
        recorder.flush()  # answered moments ago: make its record visible first
    prediction = crud.get_prediction(session, body.prediction_id)
    if prediction is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"prediction_id: no prediction {body.prediction_id!r}",
        )
    feedback = crud.add_feedback(session, prediction.id, body.prdtypecode, principal.username)
    session.commit()
    correct = prediction.prdtypecode == body.prdtypecode
    predictor.count_feedback(prediction.variant, correct)
    return FeedbackResponse(
        id=feedback.id,
        prediction_id=prediction.id,
        prdtypecode=feedback.prdtypecode,
        predicted_code=prediction.prdtypecode,
        correct=correct,
        variant=prediction.variant,
        username=feedback.username,
        created_at=feedback.created_at,
    )
