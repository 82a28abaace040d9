"""Authenticate before the body is read: an anonymous caller's body is never parsed.

FastAPI resolves a route's body parameters (JSON decoded on the event loop, multipart spooled
to temporary files) before its dependencies run, so a 401 would come only after up to
RAKUTEN_MAX_BODY_BYTES of an anonymous upload was read and decoded. This middleware checks
the credential first, from the headers only: on `/v1/...` the bearer token or API key (the
same check and cache as `deps.get_current_principal`, which then reuses the answer), on the
console's forms the session cookie. Without a valid one it answers at once (401, or the
console's redirect to its sign-in page) and closes the connection; the body is never parsed
(a small one is read and dropped, a large one is not read at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from rakuten_mlops.serving.auth.inputs import content_length
from rakuten_mlops.serving.errors import error_body, send_json

_API_PREFIX = "/v1/"
# Console forms anybody may post: the sign-in form itself.
_CONSOLE_PUBLIC = {"/console/login"}
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Bodies up to this size are read (and dropped) before an early answer; larger ones never.
DRAIN_BYTES = 64 * 1024


class PreAuthMiddleware:
    """401 (API) or a sign-in redirect (console) before any byte of the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":  # CORS preflights
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(_API_PREFIX):
            await self._api(scope, receive, send)
        elif (
            scope["method"] in _BODY_METHODS
            and path.startswith("/console/")
            and path not in _CONSOLE_PUBLIC
        ):
            await self._console(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        from rakuten_mlops.serving.deps import api_key_scheme, get_current_principal, oauth2_scheme

        request = Request(scope)
        try:
            token = await oauth2_scheme(request)
            api_key = await api_key_scheme(request)
            await get_current_principal(request, token, api_key)
        except HTTPException as exc:
            await _answer(
                scope, receive, send, exc.status_code, error_body(str(exc.detail)), exc.headers
            )
            return
        await self.app(scope, receive, send)

    async def _console(self, scope: Scope, receive: Receive, send: Send) -> None:
        from rakuten_mlops.serving.console.auth import SESSION_COOKIE, session_is_valid

        request = Request(scope)
        token = request.cookies.get(SESSION_COOKIE)
        if token and await session_is_valid(request, token):
            await self.app(scope, receive, send)
            return
        location = "/console/login?" + urlencode({"next": "/console"})
        await _answer(
            scope, receive, send, 303, error_body("sign in first"), {"Location": location}
        )


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    body: dict[str, object],
    headers: Mapping[str, str] | None,
) -> None:
    """Answer without the route. A small declared body (at most `DRAIN_BYTES`) is read and
    dropped first: closing a socket with unread bytes makes the kernel reset the connection,
    which can destroy the answer on its way to the client. A larger one is left unread and
    the connection ends with this answer."""
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    declared = content_length(scope)
    if declared is not None and declared <= DRAIN_BYTES:
        received, more = 0, True
        while more and received <= DRAIN_BYTES:
            message = await receive()
            received += len(message.get("body", b""))
            more = message.get("more_body", False) and message["type"] == "http.request"
    await send_json(send, status, body, [(b"connection", b"close"), *extra])
