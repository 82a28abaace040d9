"""Reviewer agreement (Cohen's kappa per pair and class), the disagreements an admin
settles, and the audit trail of every review decision as CSV (admins)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rakuten_mlops.db import crud_console
from rakuten_mlops.serving.console.access import (
    AdminDep,
    ConsoleRoute,
    CsrfDep,
    ReviewerDep,
    console_rate_limit,
)
from rakuten_mlops.serving.console.rendering import render
from rakuten_mlops.serving.deps import PredictorDep, RecorderDep, SessionDep
from rakuten_mlops.serving.schemas import MAX_DB_INT
from rakuten_mlops.serving.services.agreement import open_disagreements, pair_agreement
from rakuten_mlops.serving.services.review import record_form_review

router = APIRouter(prefix="/console", route_class=ConsoleRoute)


@router.get("/agreement", response_class=HTMLResponse)
def agreement_page(request: Request, session: SessionDep, principal: ReviewerDep) -> Response:
    """Kappa per reviewer pair and class; the open disagreements (settled by admins)."""
    reviews = crud_console.double_reviews(session)
    return render(
        request,
        "agreement.html",
        {
            "pairs": pair_agreement(reviews),
            "double_reviews": len(reviews),
            "disagreements": open_disagreements(reviews),
            "settled": sum(r.settled_code is not None for r in reviews),
        },
    )


@router.post(
    "/agreement/{prediction_id}",
    dependencies=[CsrfDep, console_rate_limit("api")],
)
def settle(
    prediction_id: str,
    session: SessionDep,
    recorder: RecorderDep,
    predictor: PredictorDep,
    principal: AdminDep,
    prdtypecode: Annotated[int, Form(ge=0, le=MAX_DB_INT)],
) -> Response:
    """An admin's final code for a disagreement (recorded as a `settle` review)."""
    record_form_review(prediction_id, prdtypecode, session, recorder, predictor, principal)
    return RedirectResponse(
        "/console/agreement?notice=settled", status_code=status.HTTP_303_SEE_OTHER
    )


@router.get("/audit.csv")
def audit_export(session: SessionDep, principal: AdminDep) -> Response:
    """Every review decision (who, when, model version, code before -> after) as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(crud_console.AUDIT_COLUMNS)
    writer.writerows(crud_console.audit_rows(session))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="review-audit-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
