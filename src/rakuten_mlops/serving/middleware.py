"""Pure ASGI middleware: request id, one JSON log line and the HTTP metrics per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rakuten_mlops.serving.logs import request_id_var
from rakuten_mlops.serving.metrics import ServiceMetrics
from rakuten_mlops.serving.prediction.batcher import MicroBatcher

logger = logging.getLogger("rakuten_mlops.serving.access")
REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUIET_ROUTES = {"/metrics", "/health", "/ready"}


class RequestContextMiddleware:
    """Tags each request with an id (kept from `X-Request-ID` when sane), logs and counts it."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, batcher: MicroBatcher) -> None:
        self.app = app
        self.metrics = metrics
        self.batcher = batcher
        # A flood of anonymous calls must not become a flood of log lines: 401s are logged
        # at most 20 a second (all of them are counted in rakuten_http_requests_total).
        self._refusals = _LogBudget(per_second=20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status_code = 500
        # Only a request with a credential will predict: an anonymous one (refused before its
        # body is read) must not make the micro-batcher wait for it.
        predicting = scope["path"].startswith("/v1/predict") and _has_credential(scope)
        arrival = self.batcher.expect() if predicting else None
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if arrival is not None:
                arrival.done()
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(status_code)).inc()
            self.metrics.http_duration.labels(method, route).observe(elapsed)
            if (route not in _QUIET_ROUTES or status_code >= 400) and (
                status_code != 401 or self._refusals.allow()
            ):
                logger.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "path": scope["path"],
                        "status": status_code,
                        "duration_ms": round(elapsed * 1000, 2),
                        "model_version": _model_version(scope),
                    },
                )
            request_id_var.reset(token)


class _LogBudget:
    """At most `per_second` log lines a second; says how many were left out meanwhile."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._second = 0
        self._used = 0
        self.skipped = 0

    def allow(self) -> bool:
        now = int(time.monotonic())
        if now != self._second:
            if self.skipped:
                logger.info("requests refused without a log line", extra={"count": self.skipped})
            self._second, self._used, self.skipped = now, 0, 0
        self._used += 1
        if self._used > self.per_second:
            self.skipped += 1
            return False
        return True


def _has_credential(scope: Scope) -> bool:
    return any(name in (b"authorization", b"x-api-key") for name, _ in scope.get("headers", ()))


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


def _route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/predict`), never the raw path (label cardinality)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _model_version(scope: Scope) -> Any:
    app = scope.get("app")
    models = getattr(getattr(app, "state", None), "models", None)
    champion = getattr(models, "champion", None)
    return getattr(champion, "version", None)
