"""Dependencies of the routes, as `Annotated` aliases (`SessionDep`, `CurrentPrincipal`...).

Authentication plugs in here: `get_current_principal` is the one place that says who calls
(a bearer JWT from `POST /token` or an `X-API-Key`; 401 otherwise), `require_role` turns a
role into a dependency (admin passes every check), and `rate_limit(scope)` counts requests
per user / API key (per client IP for `/token`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from rakuten_mlops.config import Settings
from rakuten_mlops.db.models import User
from rakuten_mlops.serving.auth import credentials, passwords, principals, users
from rakuten_mlops.serving.auth.cache import PrincipalCache
from rakuten_mlops.serving.auth.principals import Principal, Role
from rakuten_mlops.serving.auth.ratelimit import Limiter, LoginThrottle, Rate
from rakuten_mlops.serving.db_health import DatabaseHealth, is_unavailable
from rakuten_mlops.serving.metrics import ServiceMetrics
from rakuten_mlops.serving.prediction.model_manager import ModelManager
from rakuten_mlops.serving.prediction.predictor import PredictionService
from rakuten_mlops.serving.prediction.recorder import PredictionRecorder

__all__ = ["CurrentPrincipal", "Principal", "Role", "rate_limit", "require_role"]

logger = logging.getLogger(__name__)
AUTHENTICATE = {"WWW-Authenticate": "Bearer"}
# Shown in /docs: "Authorize" with a user's password, or an API key.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers=AUTHENTICATE)


async def get_current_principal(
    request: Request,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller of a bearer token or an API key; 401 without a valid one.

    The user is read from the database (in a worker thread, never on the event loop), then
    kept a few seconds in the app's `PrincipalCache` (`RAKUTEN_AUTH_CACHE_S`): a change made
    through this service is in force at the next request, one made elsewhere (the `users`
    CLI, another replica) within those seconds.
    """
    known = getattr(request.state, "principal", None)
    if known is not None:  # checked before the body was read (`preauth.PreAuthMiddleware`)
        principal: Principal = known
        return principal
    if not token and not api_key:
        raise _unauthorized(
            "not authenticated: send `Authorization: Bearer <token>` (POST /token) or `X-API-Key`"
        )
    credential = f"bearer:{token}" if token else f"key:{api_key}"
    cache: PrincipalCache = request.app.state.principals
    cached = cache.get(credential)
    if cached is None:
        started = time.monotonic()
        try:
            principal, rate_key, valid_until = await run_in_threadpool(
                _authenticate, request, token, api_key
            )
        except principals.AuthError as exc:
            raise _unauthorized(str(exc)) from None
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            request.app.state.db_health.failed(exc, started)
            principal, rate_key = _last_known(request, credential, token)
        else:
            request.app.state.db_health.succeeded(started)
            cache.put(credential, principal, rate_key, valid_until)
    else:
        principal, rate_key = cached.principal, cached.rate_key
    request.state.rate_key = rate_key
    request.state.principal = principal
    return principal


def _authenticate(
    request: Request, token: str | None, api_key: str | None
) -> tuple[Principal, str, float | None]:
    """(principal, rate-limit key, the token's expiry) of a credential, from the database.

    Raises:
        AuthError: the credential is not valid.
        SQLAlchemyError: the database could not be read.
    """
    settings: Settings = request.app.state.settings
    cache: PrincipalCache = request.app.state.principals
    with request.app.state.session_factory() as session:
        if token:
            claims = credentials.decode_access_token(settings, token)
            user = users.get_user(session, str(claims["sub"]))
            if user is None:
                raise principals.AuthError("invalid token")
            state = principals.UserState.of(user)
            cache.remember_user(user.username, state)
            principal, valid_until = credentials.principal_of_claims(claims, state)
            return principal, f"user:{principal.username}", valid_until
        principal, key = credentials.principal_from_api_key(session, str(api_key))
        return principal, f"key:{key.prefix}", None


def _last_known(request: Request, credential: str, token: str | None) -> tuple[Principal, str]:
    """Who a credential was when the database last answered (`RAKUTEN_AUTH_STALE_S`): a token
    is checked by its signature and claims against its user's last known state.

    Raises:
        HTTPException: 401 for a token that is invalid even so; 503 with `Retry-After` for a
            caller not seen recently enough (nothing to check it against).
    """
    cache: PrincipalCache = request.app.state.principals
    stale = cache.get_stale(credential)
    if stale is not None:
        return stale.principal, stale.rate_key
    if token:
        try:
            claims = credentials.decode_access_token(request.app.state.settings, token)
        except principals.AuthError as exc:
            raise _unauthorized(str(exc)) from None
        state = cache.known_user(str(claims["sub"]))
        if state is not None:
            try:
                principal, _ = credentials.principal_of_claims(claims, state)
            except principals.AuthError as exc:
                raise _unauthorized(str(exc)) from None
            return principal, f"user:{principal.username}"
    health: DatabaseHealth = request.app.state.db_health
    raise HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="the service database is unavailable and this caller was not seen recently; "
        f"retry in {health.retry_after_s} s",
        headers={"Retry-After": str(health.retry_after_s)},
    )


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


async def optional_principal(request: Request) -> Principal | None:
    """The caller when it sent a valid credential, None otherwise (for public routes that
    tell more to some callers)."""
    token = await oauth2_scheme(request)
    api_key = await api_key_scheme(request)
    if not token and not api_key:
        return None
    try:
        return await get_current_principal(request, token, api_key)
    except HTTPException:
        return None


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through the given roles (and admin), 403 for the others."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role!r} may not do this (needs {' or '.join(roles) or 'admin'})",
            )
        return principal

    return check


async def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request (closed afterwards; routes commit)."""
    with request.app.state.session_factory() as session:
        yield session


async def get_models(request: Request) -> ModelManager:
    """The models in service."""
    models: ModelManager = request.app.state.models
    return models


async def get_predictor(request: Request) -> PredictionService:
    """The prediction service (variants, micro-batching, records, metrics)."""
    predictor: PredictionService = request.app.state.predictor
    return predictor


async def get_recorder(request: Request) -> PredictionRecorder:
    """The prediction record writer."""
    recorder: PredictionRecorder = request.app.state.recorder
    return recorder


async def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus metrics."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
ModelsDep = Annotated[ModelManager, Depends(get_models)]
PredictorDep = Annotated[PredictionService, Depends(get_predictor)]
RecorderDep = Annotated[PredictionRecorder, Depends(get_recorder)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


RateScope = Literal["predict", "api"]


async def enforce_rate_limit(request: Request, scope: str, identity: str) -> None:
    """Count one request of `identity` against the `scope` limit; 429 with `Retry-After`
    beyond it (for callers authenticated another way, e.g. the console's session)."""
    rates: dict[str, Rate | None] = request.app.state.rate_limits
    rate = rates.get(scope)
    if rate is None:
        return
    limiter: Limiter = request.app.state.limiter
    decision = await limiter.hit(f"{scope}:{identity}", rate)
    if decision.allowed:
        return
    route = getattr(request.scope.get("route"), "path", None) or "unmatched"
    request.app.state.metrics.rate_limited.labels(route).inc()
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"rate limit exceeded: {rate} for {scope}; retry in {decision.retry_after_s} s",
        headers={"Retry-After": str(decision.retry_after_s)},
    )


def rate_limit(scope: RateScope) -> Callable[..., Awaitable[None]]:
    """A dependency that counts the request of the caller (user or API key) against the
    `scope` limit (RAKUTEN_RATE_LIMIT_PREDICT / _API); 429 with `Retry-After` beyond it.
    """

    async def check(request: Request, principal: CurrentPrincipal) -> None:
        identity = getattr(request.state, "rate_key", None) or f"user:{principal.username}"
        await enforce_rate_limit(request, scope, identity)

    return check


async def limit_token_requests(request: Request) -> None:
    """Count a login attempt per client IP (RAKUTEN_RATE_LIMIT_TOKEN); 429 beyond it."""
    host = request.client.host if request.client else "unknown"
    await enforce_rate_limit(request, "token", f"ip:{host}")


class LoginLockedError(HTTPException):
    """Too many failed sign-ins for one user name: 429 with `Retry-After`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed sign-ins for this user; retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


async def check_login(
    request: Request, session: Session, username: str, password: str
) -> User | None:
    """The user signing in with this name and password, None when they are wrong.

    Throttled per user name (`LoginThrottle`): while the name is locked the password is not
    even checked (429). Failures are logged with a digest of the submitted name, never the
    name itself (it may be a password typed in the wrong field).

    Raises:
        LoginLockedError: the name is locked after repeated failures.
    """
    throttle: LoginThrottle = request.app.state.login_throttle
    wait = await throttle.retry_after(username)
    if wait > 0:
        raise LoginLockedError(wait)
    user = await run_in_threadpool(users.authenticate_user, session, username, password)
    if user is None:
        locked = await throttle.failed(username)
        logger.info(
            "login refused",
            extra={"username_digest": passwords.digest_for_log(username), "locked_s": locked},
        )
        return None
    await throttle.succeeded(username)
    return user
