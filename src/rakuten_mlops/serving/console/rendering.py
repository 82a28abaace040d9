"""How the console answers: its templates, a page or a fragment, the error page, cookies."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request, status
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from rakuten_mlops.config import Settings
from rakuten_mlops.schema import CATEGORY_NAMES, PRODUCT_CODES
from rakuten_mlops.serving.console import assets, auth

TEMPLATES_DIR = Path(__file__).with_name("templates")
FRAGMENT_HEADER = "x-console-fragment"
# Pages load only the console's own files (no inline script or style, no CDN).
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
NOTICES = {
    "signed-out": "You are signed out.",
    "reload": "Reload started: the page shows the new versions once it is over.",
    "undone": "Your last correction is undone; the item is back in the queue.",
    "user-created": "User created.",
    "user-updated": "User updated.",
    "user-signed-out": "User signed out everywhere.",
    "key-revoked": "API key revoked.",
}


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
        set_cookie(response, request.app.state.settings, auth.SESSION_COOKIE, renewed, None)
    return response


def error_page(
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


def set_cookie(
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
