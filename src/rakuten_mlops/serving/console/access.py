"""Who may open a console page: the session cookie, roles, CSRF, rate limits, and the route
class that turns the console's errors into pages (sign-in redirect, 403/404/422/503)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import Depends, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rakuten_mlops.serving.console import auth
from rakuten_mlops.serving.console.rendering import error_page, is_fragment
from rakuten_mlops.serving.db_health import is_unavailable
from rakuten_mlops.serving.deps import Principal, SettingsDep, rate_limit
from rakuten_mlops.serving.errors import database_unavailable, validation_errors
from rakuten_mlops.serving.prediction.model_manager import ModelNotReadyError


class LoginRequiredError(Exception):
    """No valid console session: the browser is sent to the sign-in page."""


class ConsoleForbiddenError(Exception):
    """Signed in, but the role may not open this page."""


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
                return error_page(request, status.HTTP_403_FORBIDDEN, str(exc))
            except RequestValidationError as exc:
                errors = validation_errors(exc.errors())
                return error_page(request, status.HTTP_422_UNPROCESSABLE_CONTENT, "", errors)
            except ModelNotReadyError as exc:
                return error_page(request, status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
            except SQLAlchemyError as exc:
                if not is_unavailable(exc):
                    raise
                message, headers = database_unavailable(request, exc)
                page = error_page(request, status.HTTP_503_SERVICE_UNAVAILABLE, message)
                page.headers.update(headers)
                return page
            except StarletteHTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
                page = error_page(request, exc.status_code, detail)
                page.headers.update(exc.headers or {})  # Retry-After of a 429
                return page

        return handle


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


def safe_next(target: str | None) -> str:
    """Only console paths are followed after sign-in (no open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/classify"
