"""Sign-in and sign-out: the session cookie, its CSRF nonce, the same limits as `POST /token`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rakuten_mlops.serving.auth import credentials, users
from rakuten_mlops.serving.console import auth
from rakuten_mlops.serving.console.access import (
    ConsoleForbiddenError,
    ConsoleRoute,
    CsrfDep,
    ReviewerDep,
    safe_next,
)
from rakuten_mlops.serving.console.rendering import render, set_cookie
from rakuten_mlops.serving.deps import SessionDep, SettingsDep, check_login, limit_token_requests

router = APIRouter(prefix="/console", route_class=ConsoleRoute)


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
    response = render(request, "login.html", {"next": safe_next(next), "error": None})
    set_cookie(response, settings, auth.LOGIN_CSRF_COOKIE, nonce, max_age=3600)
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
            {"next": safe_next(next), "error": "Unknown user name or wrong password."},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    response = RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    set_cookie(response, settings, auth.SESSION_COOKIE, token, max_age=None)
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
