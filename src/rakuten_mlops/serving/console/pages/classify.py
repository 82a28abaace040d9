"""Classify one product with the service's own `classify_product` (same checks, same records)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from rakuten_mlops.serving.console.access import (
    ConsoleRoute,
    CsrfDep,
    ReviewerDep,
    console_rate_limit,
)
from rakuten_mlops.serving.console.rendering import is_fragment, render
from rakuten_mlops.serving.deps import PredictorDep, SettingsDep
from rakuten_mlops.serving.schemas import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS
from rakuten_mlops.serving.services.classify import classify_product

router = APIRouter(prefix="/console", route_class=ConsoleRoute)


@router.get("/classify", response_class=HTMLResponse)
def classify_page(request: Request, principal: ReviewerDep) -> Response:
    """The classify form."""
    return render(request, "classify.html", {"result": None, "form": {}})


@router.post(
    "/classify",
    response_class=HTMLResponse,
    dependencies=[CsrfDep, console_rate_limit("predict")],
)
async def classify(
    request: Request,
    predictor: PredictorDep,
    settings: SettingsDep,
    principal: ReviewerDep,
    designation: Annotated[str, Form(max_length=MAX_TITLE_CHARS)] = "",
    description: Annotated[str, Form(max_length=MAX_DESCRIPTION_CHARS)] = "",
    image: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Classify one product with the API's own `classify_product`; show the answer."""
    if image is not None and not image.filename and not image.size:
        image = None  # the browser sends an empty part when no file is chosen
    background = BackgroundTasks()
    result = await classify_product(
        predictor,
        settings,
        principal,
        background,
        designation=designation,
        description=description or None,
        image=image,
    )
    context = {"result": result, "form": {"designation": designation, "description": description}}
    template = "_result.html" if is_fragment(request) else "classify.html"
    response = render(request, template, context)
    response.background = background  # shadow predictions run after the answer, as in the API
    return response
