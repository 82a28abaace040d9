"""The review queue (accept or correct, with `record_review`) and the corrections history."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rakuten_mlops.config import Settings
from rakuten_mlops.db import crud_console
from rakuten_mlops.db.crud_console import QueueFilters, QueueOrder
from rakuten_mlops.schema import CATEGORY_NAMES
from rakuten_mlops.serving.console.access import (
    ConsoleRoute,
    CsrfDep,
    ReviewerDep,
    console_rate_limit,
)
from rakuten_mlops.serving.console.rendering import is_fragment, render
from rakuten_mlops.serving.deps import (
    ModelsDep,
    PredictorDep,
    RecorderDep,
    SessionDep,
    SettingsDep,
)
from rakuten_mlops.serving.prediction.model_manager import ModelManager
from rakuten_mlops.serving.schemas import MAX_DB_INT
from rakuten_mlops.serving.services.review import record_form_review
from rakuten_mlops.serving.services.review_day import measured_auto_precision, review_day

router = APIRouter(prefix="/console", route_class=ConsoleRoute)


def _queue_filters(
    code: int | None, day: date | None, order: QueueOrder, reviewer: str
) -> tuple[QueueFilters, dict[str, str]]:
    if code is not None and code not in CATEGORY_NAMES:
        raise RequestValidationError(
            [{"loc": ("query", "code"), "msg": f"{code} is not a product type code"}]
        )
    query: dict[str, str] = {"order": order}
    if code is not None:
        query["code"] = str(code)
    if day is not None:
        query["day"] = day.isoformat()
    filters = QueueFilters(prdtypecode=code, day=day, order=order, reviewer=reviewer)
    return filters, query


def _queue_context(
    session: SessionDep,
    settings: Settings,
    models: ModelManager,
    filters: QueueFilters,
    query: dict[str, str],
    offset: int,
) -> dict[str, Any]:
    limit = settings.console_page_size
    rows, total = crud_console.review_queue(session, filters, limit=limit + 1, offset=offset)
    current = rows[0] if rows else None
    upcoming = list(rows[1 : limit + 1])
    today = datetime.now(UTC).date()
    return {
        "current": current,
        "upcoming": upcoming,
        "challenger_codes": crud_console.challenger_codes(session, rows),
        "total": total,
        "offset": offset,
        "limit": limit,
        "done_today": crud_console.corrections_on(session, today),
        "day": review_day(
            session,
            today,
            budget=settings.review_budget_per_day,
            auto_precision=measured_auto_precision(models),
        ),
        "filters": filters,
        "query": query,
        "query_string": urlencode(query),
        "prev_offset": max(offset - limit, 0) if offset > 0 else None,
        "next_offset": offset + limit if offset + limit < total else None,
    }


@router.get("/queue", response_class=HTMLResponse)
def queue_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    recorder: RecorderDep,
    models: ModelsDep,
    principal: ReviewerDep,
    code: Annotated[int | None, Query(ge=0, le=MAX_DB_INT, description="Predicted code.")] = None,
    day: Annotated[date | None, Query(description="Day of the prediction (UTC).")] = None,
    order: Annotated[QueueOrder, Query()] = "value",
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Response:
    """The predictions waiting for review: the current item and the ones after it."""
    recorder.flush()  # include predictions answered moments ago
    filters, query = _queue_filters(code, day, order, principal.username)
    context = _queue_context(session, settings, models, filters, query, offset)
    template = "_review.html" if is_fragment(request) else "queue.html"
    return render(request, template, context)


@router.post(
    "/queue/{prediction_id}",
    response_class=HTMLResponse,
    dependencies=[CsrfDep, console_rate_limit("api")],
)
def review_item(
    request: Request,
    prediction_id: str,
    session: SessionDep,
    settings: SettingsDep,
    recorder: RecorderDep,
    models: ModelsDep,
    predictor: PredictorDep,
    principal: ReviewerDep,
    prdtypecode: Annotated[int, Form(ge=0, le=MAX_DB_INT)],
    code: Annotated[int | None, Form(ge=0, le=MAX_DB_INT)] = None,
    day: Annotated[date | None, Form()] = None,
    order: Annotated[QueueOrder, Form()] = "value",
    offset: Annotated[int, Form(ge=0, le=MAX_DB_INT)] = 0,
) -> Response:
    """Store the reviewer's code (accepted or corrected) with the API's `record_review`."""
    record_form_review(prediction_id, prdtypecode, session, recorder, predictor, principal)
    filters, query = _queue_filters(code, day, order, principal.username)
    if is_fragment(request):
        context = _queue_context(session, settings, models, filters, query, offset)
        context["saved"] = prdtypecode
        return render(request, "_review.html", context)
    if offset:
        query["offset"] = str(offset)
    return RedirectResponse(
        "/console/queue?" + urlencode(query), status_code=status.HTTP_303_SEE_OTHER
    )


@router.get("/history", response_class=HTMLResponse)
def history_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: ReviewerDep,
    mine: Annotated[bool, Query()] = False,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Response:
    """Who corrected what and when; the user's own latest correction can be undone."""
    limit = settings.console_page_size
    rows, total = crud_console.list_corrections(
        session, username=principal.username if mine else None, limit=limit, offset=offset
    )
    last = crud_console.last_correction_of(session, principal.username)
    return render(
        request,
        "history.html",
        {
            "rows": rows,
            "total": total,
            "offset": offset,
            "limit": limit,
            "mine": mine,
            "undoable_id": last.id if last is not None else None,
            "prev_offset": max(offset - limit, 0) if offset > 0 else None,
            "next_offset": offset + limit if offset + limit < total else None,
        },
    )


@router.post("/history/undo", dependencies=[CsrfDep])
def undo_last(
    session: SessionDep,
    principal: ReviewerDep,
    feedback_id: Annotated[int, Form(ge=1, le=MAX_DB_INT)],
) -> Response:
    """Undo the user's own latest correction (409 for any other)."""
    try:
        crud_console.undo_correction(session, principal.username, feedback_id)
    except crud_console.UndoError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    session.commit()
    return RedirectResponse("/console/history?notice=undone", status_code=status.HTTP_303_SEE_OTHER)
