"""Corrections from reviewers: the correct code of a prediction, stored before answering."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from rakuten_mlops.serving.deps import (
    CurrentPrincipal,
    PredictorDep,
    RecorderDep,
    SessionDep,
    require_role,
)
from rakuten_mlops.serving.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse
from rakuten_mlops.serving.services.review import record_review

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
    return record_review(body, session, recorder, predictor, principal)
