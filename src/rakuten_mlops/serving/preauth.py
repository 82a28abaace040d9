"""Authenticate before the body is read: an anonymous caller's body is never parsed.

FastAPI resolves a route's body parameters (JSON decoded on the event loop, multipart spooled
to temporary files) before its dependencies run, so a 401 would come only after up to
RAKUTEN_MAX_BODY_BYTES of an anonymous upload was read and decoded. This middleware checks
the credential first, from the headers only: on `/v1/...` the bearer token or API key (the
same check and cache as `deps.get_current_principal`, which then reuses the answer), on the
console's forms the session cookie. Without a valid one it answers at once (401, or the
console's redirect to its sign-in page) and closes the connection; the body is not read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from rakuten_mlops.serving.errors import error_body

_API_PREFIX = "/v1/"
# Console forms anybody may post: the sign-in form itself.
_CONSOLE_PUBLIC = {"/console/login"}
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


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
            await _answer(send, exc.status_code, error_body(str(exc.detail)), exc.headers)
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
        await _answer(send, 303, error_body("sign in first"), {"Location": location})


async def _answer(
    send: Send, status: int, body: dict[str, object], headers: Mapping[str, str] | None
) -> None:
    payload = json.dumps(body).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                # The unread body is not drained: the connection ends with this answer.
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
