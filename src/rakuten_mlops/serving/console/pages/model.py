"""Champion and challenger, online accuracy over time, drift, reload (admins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rakuten_mlops.db import crud_console
from rakuten_mlops.serving.console.access import AdminDep, ConsoleRoute, CsrfDep, ReviewerDep
from rakuten_mlops.serving.console.charts import accuracy_chart, coverage_chart
from rakuten_mlops.serving.console.rendering import render
from rakuten_mlops.serving.deps import ModelsDep, SessionDep
from rakuten_mlops.serving.prediction.reloading import start_reload
from rakuten_mlops.serving.services.models import model_info, review_rule_point

router = APIRouter(prefix="/console", route_class=ConsoleRoute)
ACCURACY_DAYS = 90


@router.get("/model", response_class=HTMLResponse)
def model_page(
    request: Request,
    session: SessionDep,
    models: ModelsDep,
    principal: ReviewerDep,
) -> Response:
    """Champion and challenger, online accuracy over time, drift, reload (admins)."""
    since = datetime.now(UTC) - timedelta(days=ACCURACY_DAYS)
    points = crud_console.daily_accuracy(session, since)
    reviewed = sum(p.reviewed for p in points)
    correct = sum(p.correct for p in points)
    champion = models.champion
    rule = review_rule_point(champion)
    return render(
        request,
        "model.html",
        {
            "champion": model_info(models.champion) if models.champion else None,
            "challenger": model_info(models.challenger) if models.challenger else None,
            "challenger_mode": models.settings.challenger_mode,
            "reload": models.status,
            "chart": accuracy_chart(points),
            "coverage_chart": coverage_chart(champion.coverage_curve, rule) if champion else None,
            "rule": rule,
            "reviewed": reviewed,
            "accuracy": correct / reviewed if reviewed else None,
            "days": ACCURACY_DAYS,
            "drift": crud_console.latest_drift_run(session),
        },
    )


@router.post("/model/reload", dependencies=[CsrfDep])
async def reload_model(request: Request, principal: AdminDep) -> Response:
    """Start a background reload of the models (admins)."""
    start_reload(request.app)
    return RedirectResponse("/console/model?notice=reload", status_code=status.HTTP_303_SEE_OTHER)
