"""Wires security into the app: secrets, first admin, rate limiters, security headers,
CORS, body size limit and who may read `/metrics`.

`install_security(app, settings)` runs in `create_app` (it returns the settings with any
secret generated for a dev run); `start_security` / `stop_security` run in the lifespan.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth import startup
from rakuten_mlops.serving.auth.cache import PrincipalCache
from rakuten_mlops.serving.auth.inputs import BodySizeLimitMiddleware
from rakuten_mlops.serving.auth.preauth import PreAuthMiddleware
from rakuten_mlops.serving.auth.ratelimit import (
    LoginPolicy,
    LoginThrottle,
    make_limiter,
    parse_rate,
)
from rakuten_mlops.serving.errors import error_body, send_json

logger = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# Non-HTML answers (JSON, metrics) never need to load or run anything. HTML pages (the
# docs' Swagger UI from its CDN, the console) set their own policy or none.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_NO_STORE_PREFIXES = ("/token", "/v1/")
# Sent on answers to HTTPS requests (directly, or from a trusted proxy's X-Forwarded-Proto):
# browsers then refuse plain HTTP to this host for a year.
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def install_security(app: FastAPI, settings: Settings) -> Settings:
    """Check the secrets, build the limiter and add the security middleware to `app`.

    Call before the outermost (request logging) middleware is added.

    Raises:
        SecurityConfigError: missing or placeholder secrets outside `RAKUTEN_ENV=dev`.
        RateLimitConfigError: a rate limit setting is malformed.
    """
    resolved = startup.resolve_secrets(settings)
    settings = resolved.settings
    app.state.startup_secrets = resolved
    app.state.rate_limits = {
        "predict": parse_rate(settings.rate_limit_predict),
        "token": parse_rate(settings.rate_limit_token),
        "api": parse_rate(settings.rate_limit_api),
    }
    app.state.limiter = make_limiter(settings.redis_url, settings.rate_limit_fail_open)
    app.state.login_throttle = LoginThrottle(
        LoginPolicy(
            max_failures=settings.login_max_failures,
            lock_s=settings.login_lock_s,
            lock_max_s=settings.login_lock_max_s,
            forget_s=settings.login_forget_s,
        ),
        settings.redis_url,
    )
    app.state.principals = PrincipalCache(settings.auth_cache_s, stale_s=settings.auth_stale_s)
    app.state.metrics_server = None
    # Innermost (before any route reads a body), inside CORS and the security headers, which
    # then dress its 401s too: nothing of an anonymous caller's body is read.
    app.add_middleware(PreAuthMiddleware)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.add_middleware(
        SecurityHeadersMiddleware,
        metrics_token=token,
        metrics_elsewhere=settings.metrics_port > 0,
    )
    return settings


def start_security(app: FastAPI) -> None:
    """At start-up, with the database: the first admin and the dev notices."""
    settings: Settings = app.state.settings
    with app.state.session_factory() as session:
        created = startup.ensure_first_admin(session, settings)
    if created is not None:
        logger.info("first admin created", extra={"username": created.username})
    startup.announce_dev_secrets(app.state.startup_secrets, created is not None)


def start_metrics_port(app: FastAPI) -> None:
    """At start-up: the separate metrics port (or a warning when /metrics is open)."""
    settings: Settings = app.state.settings
    if settings.metrics_port > 0:
        from prometheus_client import start_http_server

        try:
            app.state.metrics_server = start_http_server(
                settings.metrics_port, addr=settings.serve_host, registry=app.state.metrics.registry
            )
        except OSError as exc:  # another worker of this host serves it already
            logger.warning("metrics port %s not opened: %s", settings.metrics_port, exc)
    elif settings.env != "dev" and settings.metrics_token is None:
        logger.warning(
            "GET /metrics is open on the API port: set RAKUTEN_METRICS_TOKEN or "
            "RAKUTEN_METRICS_PORT to restrict it"
        )


async def stop_security(app: FastAPI) -> None:
    """At shutdown: close the limiter's connections and the metrics server."""
    await app.state.limiter.close()
    await app.state.login_throttle.close()
    server = app.state.metrics_server
    if server is not None:
        httpd, thread = server
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class SecurityHeadersMiddleware:
    """Security headers on every answer; `/metrics` behind a bearer token or elsewhere."""

    def __init__(
        self, app: ASGIApp, metrics_token: str | None = None, metrics_elsewhere: bool = False
    ) -> None:
        self.app = app
        self.metrics_token = metrics_token
        self.metrics_elsewhere = metrics_elsewhere

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        https = scope.get("scheme") == "https"
        if path == "/metrics" and not self._metrics_allowed(scope):
            status = 404 if self.metrics_elsewhere else 401
            detail = "not found" if status == 404 else "metrics need `Authorization: Bearer`"
            await send_json(send, status, error_body(detail), self._headers(path, status))
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                present = {name.lower() for name, _ in headers}
                html = any(
                    name.lower() == b"content-type" and value.startswith(b"text/html")
                    for name, value in headers
                )
                extra = [
                    h
                    for h in self._headers(path, message["status"], html=html)
                    if h[0] not in present
                ]
                if https and HSTS[0] not in present:
                    extra.append(HSTS)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _metrics_allowed(self, scope: Scope) -> bool:
        if self.metrics_elsewhere:
            return False
        if self.metrics_token is None:
            return True
        expected = f"Bearer {self.metrics_token}".encode()
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return hmac.compare_digest(value, expected)
        return False

    def _headers(self, path: str, status: int, html: bool = False) -> list[tuple[bytes, bytes]]:
        headers = list(SECURITY_HEADERS)
        if not html:
            headers.append((b"content-security-policy", API_CSP))
        if path.startswith(_NO_STORE_PREFIXES):
            headers.append((b"cache-control", b"no-store"))
        if status == 401 and path == "/metrics":
            headers.append((b"www-authenticate", b"Bearer"))
        return headers
