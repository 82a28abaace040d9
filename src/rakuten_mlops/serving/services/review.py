"""Record a reviewer's code for a prediction: `POST /v1/feedback` and the console's queue."""

from __future__ import annotations

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from rakuten_mlops.db import crud
from rakuten_mlops.serving.auth.principals import Principal
from rakuten_mlops.serving.prediction.predictor import PredictionService
from rakuten_mlops.serving.prediction.recorder import PredictionRecorder
from rakuten_mlops.serving.schemas import FeedbackRequest, FeedbackResponse


def record_review(
    body: FeedbackRequest,
    session: Session,
    recorder: PredictionRecorder,
    predictor: PredictionService,
    principal: Principal,
) -> FeedbackResponse:
    """Store the correct code of a prediction (committed before the answer; 404 if unknown)."""
    if recorder.is_pending(body.prediction_id):
        recorder.flush()  # answered moments ago: make its record visible first
    prediction = crud.get_prediction(session, body.prediction_id)
    if prediction is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"prediction_id: no prediction {body.prediction_id!r}",
        )
    kind = crud.begin_review(
        session,
        prediction,
        principal.username,
        admin=principal.role == "admin",
        second_share=predictor.settings.review_second_share,
    )
    feedback = crud.add_feedback(
        session, prediction.id, body.prdtypecode, principal.username, kind=kind
    )
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


def record_form_review(
    prediction_id: str,
    prdtypecode: int,
    session: Session,
    recorder: PredictionRecorder,
    predictor: PredictionService,
    principal: Principal,
) -> FeedbackResponse:
    """`record_review` for a console form: a bad id or code is a 422 naming the field."""
    try:
        body = FeedbackRequest(prediction_id=prediction_id, prdtypecode=prdtypecode)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return record_review(body, session, recorder, predictor, principal)
