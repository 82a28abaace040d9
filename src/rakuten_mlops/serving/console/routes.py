"""Pages of the review console: sign-in, classify, review queue, history, model, admin.

Every page calls the service's own functions: classification goes through the
`POST /v1/predict` route function (same validation, same predictor, same records) and
corrections through the `POST /v1/feedback` one (same `crud.add_feedback`, same metrics).
Errors become HTML pages (the console's own route class), never JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
    status,
)
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rakuten_mlops.config import Settings
from rakuten_mlops.db import crud, crud_console
from rakuten_mlops.db.crud_console import QueueFilters, QueueOrder
from rakuten_mlops.db.models import Prediction
from rakuten_mlops.schema import CATEGORY_NAMES, PRODUCT_CODES
from rakuten_mlops.serving.api.routes import users as users_api
from rakuten_mlops.serving.api.routes.feedback import post_feedback
from rakuten_mlops.serving.api.routes.model import model_info
from rakuten_mlops.serving.api.routes.predict import predict as api_predict
from rakuten_mlops.serving.api.routes.users import ApiKeyCreated
from rakuten_mlops.serving.auth import credentials, users
from rakuten_mlops.serving.auth.principals import ROLES
from rakuten_mlops.serving.console import assets, auth
from rakuten_mlops.serving.console.charts import accuracy_chart
from rakuten_mlops.serving.db_health import is_unavailable
from rakuten_mlops.serving.deps import (
    ModelsDep,
    PredictorDep,
    Principal,
    RecorderDep,
    SessionDep,
    SettingsDep,
    check_login,
    limit_token_requests,
    rate_limit,
)
from rakuten_mlops.serving.errors import database_unavailable, validation_errors
from rakuten_mlops.serving.prediction.model_manager import ModelNotReadyError
from rakuten_mlops.serving.prediction.reloading import start_reload
from rakuten_mlops.serving.schemas import (
    MAX_DB_INT,
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    FeedbackRequest,
)

logger = logging.getLogger(__name__)
BodyT = TypeVar("BodyT", bound=BaseModel)

TEMPLATES_DIR = Path(__file__).with_name("templates")
FRAGMENT_HEADER = "x-console-fragment"
# Pages load only the console's own files (no inline script or style, no CDN).
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
ACCURACY_DAYS = 90
NOTICES = {
    "signed-out": "You are signed out.",
    "reload": "Reload started: the page shows the new versions once it is over.",
    "undone": "Your last correction is undone; the item is back in the queue.",
    "user-created": "User created.",
    "user-updated": "User updated.",
    "user-signed-out": "User signed out everywhere.",
    "key-revoked": "API key revoked.",
}


class LoginRequiredError(Exception):
    """No valid console session: the browser is sent to the sign-in page."""


class ConsoleForbiddenError(Exception):
    """Signed in, but the role may not open this page."""


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    """The console's Jinja2 templates (autoescaped), with `asset()` and the categories."""
    built = Jinja2Templates(directory=TEMPLATES_DIR)
    built.env.globals["asset"] = assets.asset_url
    built.env.globals["categories"] = [(code, CATEGORY_NAMES[code]) for code in PRODUCT_CODES]
    built.env.globals["category_name"] = lambda code: CATEGORY_NAMES.get(int(code), str(code))
    built.env.filters["when"] = _format_when
    return built


def _format_when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def is_fragment(request: Request) -> bool:
    """Whether the page's script asked for a fragment (a part of the page) only."""
    return request.headers.get(FRAGMENT_HEADER) == "1"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """A page (or fragment) with the common context: who is signed in, CSRF token, notice."""
    values: dict[str, Any] = {
        "principal": getattr(request.state, "console_principal", None),
        "csrf_token": getattr(request.state, "console_csrf", ""),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "path": request.url.path,
    }
    values.update(context or {})
    response = templates().TemplateResponse(request, template, values, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CONSOLE_CSP
    renewed = getattr(request.state, "console_renewed_token", None)
    if renewed:
        _set_cookie(response, request.app.state.settings, auth.SESSION_COOKIE, renewed, None)
    return response


class ConsoleRoute(APIRoute):
    """Turns the console's errors into HTML: sign-in redirect, 403/404/422 pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequiredError:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                if request.method != "GET" or is_fragment(request):
                    target = "/console"
                return RedirectResponse(
                    "/console/login?" + urlencode({"next": target}),
                    status_code=status.HTTP_303_SEE_OTHER,
                )
            except ConsoleForbiddenError as exc:
                return _error_page(request, status.HTTP_403_FORBIDDEN, str(exc))
            except RequestValidationError as exc:
                errors = validation_errors(exc.errors())
                return _error_page(request, status.HTTP_422_UNPROCESSABLE_CONTENT, "", errors)
            except ModelNotReadyError as exc:
                return _error_page(request, status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
            except SQLAlchemyError as exc:
                if not is_unavailable(exc):
                    raise
                message, headers = database_unavailable(request, exc)
                page = _error_page(request, status.HTTP_503_SERVICE_UNAVAILABLE, message)
                page.headers.update(headers)
                return page
            except StarletteHTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
                page = _error_page(request, exc.status_code, detail)
                page.headers.update(exc.headers or {})  # Retry-After of a 429
                return page

        return handle


def _error_page(
    request: Request, code: int, message: str, errors: list[dict[str, str]] | None = None
) -> HTMLResponse:
    titles = {
        400: "Bad request",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
        422: "Please check the form",
        429: "Too many requests",
        503: "Unavailable for a moment",
    }
    template = "_error.html" if is_fragment(request) else "error.html"
    return render(
        request,
        template,
        {"code": code, "title": titles.get(code, "Error"), "message": message, "errors": errors},
        status_code=code,
    )


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


# Session and roles -----------------------------------------------------------------------


def console_principal(request: Request, settings: SettingsDep) -> Principal:
    """The signed-in user of the session cookie (sign-in page otherwise).

    A session used past half its token's life gets a fresh token (the page sets the cookie),
    so a reviewer at work stays signed in and an idle session ends after the token's life.
    """
    token = request.cookies.get(auth.SESSION_COOKIE)
    if not token:
        raise LoginRequiredError
    with request.app.state.session_factory() as session:
        principal = auth.principal_of(session, settings, token)
        if principal is not None:
            renewed = auth.renewed_token(session, settings, token)
            if renewed is not None:
                request.state.console_renewed_token = renewed
                token = renewed
    if principal is None:
        raise LoginRequiredError
    request.state.console_principal = principal
    request.state.console_csrf = auth.csrf_token(settings, token)
    return principal


def console_role(*roles: str) -> Callable[..., Principal]:
    """A dependency: the signed-in user when its role is one of `roles` (or admin)."""

    def check(principal: Annotated[Principal, Depends(console_principal)]) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            allowed = " or ".join((*roles, "admin")) if roles else "admin"
            raise ConsoleForbiddenError(
                f"The console is for {allowed} users; {principal.username!r} is a {principal.role}."
            )
        return principal

    return check


ReviewerDep = Annotated[Principal, Depends(console_role("reviewer"))]
AdminDep = Annotated[Principal, Depends(console_role())]


async def verify_csrf(request: Request, settings: SettingsDep) -> None:
    """Refuse a form whose `csrf_token` is not the one of this session (403)."""
    form = await request.form()
    given = form.get("csrf_token")
    token = request.cookies.get(auth.SESSION_COOKIE, "")
    if not token or not auth.same_token(
        auth.csrf_token(settings, token), given if isinstance(given, str) else None
    ):
        raise ConsoleForbiddenError(
            "The form expired or did not come from this console (CSRF check); reload the page."
        )


CsrfDep = Depends(verify_csrf)


def console_rate_limit(scope: Literal["predict", "api"]) -> Any:
    """The API's per-user rate limit of `scope`, counted for the signed-in user: the
    console shares each user's budget with their API calls (429 page beyond it)."""
    check = rate_limit(scope)

    async def enforce(request: Request, principal: ReviewerDep) -> None:
        await check(request, principal)

    return Depends(enforce)


def _safe_next(target: str | None) -> str:
    """Only console paths are followed after sign-in (no open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/classify"


# Static files and images -----------------------------------------------------------------


@router.get("/static/{version}/{name:path}", name="console_static")
def static_file(version: str, name: str) -> Response:
    """A static file; immutable caching when `version` is its current hash."""
    path = assets.asset_file(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no static file {name!r}")
    current = assets.asset_versions()[name] == version
    return FileResponse(
        path,
        media_type=assets.media_type(path),
        headers={"Cache-Control": assets.IMMUTABLE if current else assets.REVALIDATE},
    )


@router.get("/images/{prediction_id}")
def prediction_image(
    prediction_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: ReviewerDep,
) -> Response:
    """The stored image of a prediction (RAKUTEN_IMAGE_STORE_DIR), else a placeholder."""
    prediction = crud.get_prediction(session, prediction_id)
    stored = _stored_image(prediction, settings.image_store_dir)
    if stored is None:
        return RedirectResponse(
            assets.asset_url("placeholder.svg"), status_code=status.HTTP_307_TEMPORARY_REDIRECT
        )
    return FileResponse(
        stored, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


def _stored_image(prediction: Prediction | None, store: Path | None) -> Path | None:
    if prediction is None or store is None or not prediction.image_path:
        return None
    path = Path(prediction.image_path).resolve()
    if not path.is_file() or not path.is_relative_to(store.resolve()):
        return None  # never serve a file outside the store
    return path


# Sign-in ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def console_home() -> Response:
    """The console starts on the classify page."""
    return RedirectResponse("/console/classify", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, settings: SettingsDep, next: Annotated[str | None, Query()] = None
) -> Response:
    """The sign-in form (with its double-submit CSRF cookie)."""
    nonce = auth.new_login_nonce()
    request.state.console_csrf = nonce
    response = render(request, "login.html", {"next": _safe_next(next), "error": None})
    _set_cookie(response, settings, auth.LOGIN_CSRF_COOKIE, nonce, max_age=3600)
    return response


@router.post(
    "/login",
    response_class=HTMLResponse,
    # Same limits per client IP and per user name as `POST /token`: the form is no way
    # around them.
    dependencies=[Depends(limit_token_requests)],
)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=150)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Check the user name and password; on success set the session cookie."""
    expected = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
    if not auth.same_token(expected, csrf_token):
        raise ConsoleForbiddenError(
            "The sign-in form expired or did not come from this console; reload the page."
        )
    user = await check_login(request, session, username.strip(), password)
    token = None if user is None else credentials.create_access_token(settings, user)
    if token is None:
        request.state.console_csrf = expected
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "Unknown user name or wrong password."},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    response = RedirectResponse(_safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    _set_cookie(response, settings, auth.SESSION_COOKIE, token, max_age=None)
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/console")
    return response


@router.post("/logout", dependencies=[CsrfDep])
def logout(request: Request, settings: SettingsDep, principal: ReviewerDep) -> Response:
    """Sign out: the cookie is removed and every session and token of the user issued until
    now is refused (a copied cookie is of no use any more)."""
    with request.app.state.session_factory() as session:
        users.sign_out_everywhere(session, principal.username)
        session.commit()
    response = RedirectResponse(
        "/console/login?notice=signed-out", status_code=status.HTTP_303_SEE_OTHER
    )
    response.delete_cookie(
        auth.SESSION_COOKIE,
        path="/console",
        secure=settings.cookie_secure(),
        httponly=True,
        samesite=settings.console_cookie_samesite,
    )
    return response


def _set_cookie(
    response: Response, settings: Settings, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        secure=settings.cookie_secure(),
        httponly=True,
        samesite=settings.console_cookie_samesite,
    )


# Classify --------------------------------------------------------------------------------


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
    """Classify one product with the API's own prediction function; show the answer."""
    if image is not None and not image.filename and not image.size:
        image = None  # the browser sends an empty part when no file is chosen
    background = BackgroundTasks()
    result = await api_predict(
        predictor=predictor,
        settings=settings,
        principal=principal,
        background=background,
        designation=designation,
        description=description or None,
        productid=None,
        imageid=None,
        image=image,
    )
    context = {"result": result, "form": {"designation": designation, "description": description}}
    template = "_result.html" if is_fragment(request) else "classify.html"
    response = render(request, template, context)
    response.background = background  # shadow predictions run after the answer, as in the API
    return response


# Review queue ----------------------------------------------------------------------------


def _queue_filters(
    code: int | None, day: date | None, order: QueueOrder
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
    return QueueFilters(prdtypecode=code, day=day, order=order), query


def _queue_context(
    session: SessionDep,
    settings: Settings,
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
        "total": total,
        "offset": offset,
        "limit": limit,
        "done_today": crud_console.corrections_on(session, today),
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
    principal: ReviewerDep,
    code: Annotated[int | None, Query(ge=0, le=MAX_DB_INT, description="Predicted code.")] = None,
    day: Annotated[date | None, Query(description="Day of the prediction (UTC).")] = None,
    order: Annotated[QueueOrder, Query()] = "oldest",
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Response:
    """The predictions waiting for review: the current item and the ones after it."""
    recorder.flush()  # include predictions answered moments ago
    filters, query = _queue_filters(code, day, order)
    context = _queue_context(session, settings, filters, query, offset)
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
    predictor: PredictorDep,
    principal: ReviewerDep,
    prdtypecode: Annotated[int, Form(ge=0, le=MAX_DB_INT)],
    code: Annotated[int | None, Form(ge=0, le=MAX_DB_INT)] = None,
    day: Annotated[date | None, Form()] = None,
    order: Annotated[QueueOrder, Form()] = "oldest",
    offset: Annotated[int, Form(ge=0, le=MAX_DB_INT)] = 0,
) -> Response:
    """Store the reviewer's code (accepted or corrected) with the API's feedback function."""
    try:
        body = FeedbackRequest(prediction_id=prediction_id, prdtypecode=prdtypecode)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    post_feedback(body, session, recorder, predictor, principal)
    filters, query = _queue_filters(code, day, order)
    if is_fragment(request):
        context = _queue_context(session, settings, filters, query, offset)
        context["saved"] = prdtypecode
        return render(request, "_review.html", context)
    if offset:
        query["offset"] = str(offset)
    return RedirectResponse(
        "/console/queue?" + urlencode(query), status_code=status.HTTP_303_SEE_OTHER
    )


# Corrections history ---------------------------------------------------------------------


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


# Model -----------------------------------------------------------------------------------


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
    return render(
        request,
        "model.html",
        {
            "champion": model_info(models.champion) if models.champion else None,
            "challenger": model_info(models.challenger) if models.challenger else None,
            "challenger_mode": models.settings.challenger_mode,
            "reload": models.status,
            "chart": accuracy_chart(points),
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


# Users and API keys (admins) -------------------------------------------------------------


def _body(model: type[BodyT], **values: Any) -> BodyT:
    """A request body of the API's admin routes, or the console's 422 page naming the field."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


def _admin_context(session: SessionDep, created_key: ApiKeyCreated | None = None) -> dict[str, Any]:
    return {
        "users": users_api.list_users(session),
        "keys": users_api.list_api_keys(session, None),
        "roles": ROLES,
        "created_key": created_key,
    }


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, session: SessionDep, principal: AdminDep) -> Response:
    """Users (role, enabled) and API keys, with the forms to change them."""
    return render(request, "users.html", _admin_context(session))


@router.post("/admin/users", dependencies=[CsrfDep])
def create_user(
    session: SessionDep,
    principal: AdminDep,
    username: Annotated[str, Form(max_length=150)],
    password: Annotated[str, Form(max_length=256)],
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    """Create a user (the API's `POST /v1/admin/users`)."""
    users_api.create_user(
        _body(users_api.UserCreate, username=username.strip(), password=password, role=role),
        session,
    )
    return RedirectResponse(
        "/console/admin/users?notice=user-created", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/admin/users/{username}", dependencies=[CsrfDep])
def update_user(
    username: str,
    session: SessionDep,
    principal: AdminDep,
    role: Annotated[str | None, Form(max_length=16)] = None,
    disabled: Annotated[bool | None, Form()] = None,
) -> Response:
    """Change a user's role or disable / enable it (the API's `PATCH /v1/admin/users/...`)."""
    users_api.update_user(
        username, _body(users_api.UserUpdate, role=role, disabled=disabled), session, principal
    )
    return RedirectResponse(
        "/console/admin/users?notice=user-updated", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/admin/users/{username}/sign-out", dependencies=[CsrfDep])
def sign_out_user(username: str, session: SessionDep, principal: AdminDep) -> Response:
    """Sign a user out everywhere (the API's `POST /v1/admin/users/.../sign-out`)."""
    users_api.sign_out_user(username, session)
    return RedirectResponse(
        "/console/admin/users?notice=user-signed-out", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/admin/api-keys", response_class=HTMLResponse, dependencies=[CsrfDep])
def create_api_key(
    request: Request,
    session: SessionDep,
    principal: AdminDep,
    username: Annotated[str, Form(max_length=150)],
    name: Annotated[str, Form(max_length=100)],
) -> Response:
    """Create an API key; the page shows it this once."""
    created = users_api.create_api_key(
        _body(users_api.ApiKeyCreate, username=username, name=name.strip()), session
    )
    return render(request, "users.html", _admin_context(session, created))


@router.post("/admin/api-keys/{key_id}/revoke", dependencies=[CsrfDep])
def revoke_api_key(
    key_id: Annotated[int, PathParam(ge=1, le=MAX_DB_INT)], session: SessionDep, principal: AdminDep
) -> Response:
    """Revoke an API key (the API's `DELETE /v1/admin/api-keys/...`)."""
    users_api.revoke_api_key(key_id, session)
    return RedirectResponse(
        "/console/admin/users?notice=key-revoked", status_code=status.HTTP_303_SEE_OTHER
    )
