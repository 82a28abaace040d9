"""Exception handlers: every error is JSON naming what is wrong, never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from rakuten_mlops.errors import RakutenError
from rakuten_mlops.serving.logs import request_id_var
from rakuten_mlops.serving.prediction.model_manager import ModelNotReadyError

logger = logging.getLogger(__name__)
_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def field_name(loc: Sequence[Any]) -> str:
    """A readable field path: ("body", "items", 2, "image") -> "items[2].image"."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or (str(loc[0]) if loc else "request")


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic/FastAPI errors as `{"field", "message"}` (no input values echoed)."""
    return [
        {
            "field": field_name(error.get("loc", ())),
            "message": str(error.get("msg", "invalid")).removeprefix("Value error, "),
        }
        for error in errors
    ]


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer a request with a JSON body from ASGI middleware (before any route runs)."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def error_body(detail: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The JSON body of an error answer."""
    body: dict[str, Any] = {"detail": detail, "request_id": request_id_var.get()}
    if errors is not None:
        body["errors"] = errors
    return body


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return JSONResponse(
        error_body(f"invalid request: {summary}", errors),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        error_body(detail), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _not_ready_handler(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        error_body(str(exc)),
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def database_unavailable(request: Request, exc: BaseException) -> tuple[str, dict[str, str]]:
    """The 503 message and headers of a route that needs the unreachable database (and the
    outage noted on the app's `DatabaseHealth`)."""
    health = getattr(request.app.state, "db_health", None)
    retry = str(getattr(health, "retry_after_s", 5))
    if health is not None:
        health.failed(exc)
    message = f"the service database is unavailable; retry in {retry} s (predictions go on)"
    return message, {"Retry-After": retry}


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    from rakuten_mlops.serving.db_health import is_unavailable

    if is_unavailable(exc):
        message, headers = database_unavailable(request, exc)
        return JSONResponse(
            error_body(message), status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers
        )
    logger.error("unexpected error", exc_info=exc)
    return JSONResponse(
        error_body("internal error; the request id identifies it in the service logs"),
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def add_exception_handlers(app: FastAPI) -> None:
    """Install the JSON error handlers on `app`.

    Database errors and the project's own errors have handlers of their own class, answered
    like any handled error: the connection stays open for the client's next request. The
    handler of `Exception` is the last resort only: Starlette re-raises after it answers, and
    the server then drops the connection, so a client that reuses it (keep-alive, a load
    balancer's pool) would get a reset on its next request, not an answer.
    """
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(ModelNotReadyError, _not_ready_handler)
    app.add_exception_handler(SQLAlchemyError, _unexpected_handler)
    app.add_exception_handler(RakutenError, _unexpected_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
