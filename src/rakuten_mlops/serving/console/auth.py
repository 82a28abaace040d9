"""Console sign-in: a session cookie holding a signed access token, and CSRF tokens.

The session cookie carries the same signed access token as the API's `POST /token`
(`create_access_token`), checked at every request with `principal_from_token`, so a
disabled user, a changed role or a sign-out is in force at once. A session in use is
renewed past half its token's life (`renewed_token`). CSRF tokens are HMACs of the session
token (a double-submit nonce cookie before sign-in), so every form proves it was served to
the holder of the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth import credentials, principals, users
from rakuten_mlops.serving.deps import Principal

SESSION_COOKIE = "rakuten_console"
LOGIN_CSRF_COOKIE = "rakuten_console_login"


def principal_of(session: Session, settings: Settings, token: str) -> Principal | None:
    """The signed-in user of a session token; None when it is invalid, expired or disabled."""
    try:
        return credentials.principal_from_token(session, settings, token)
    except principals.AuthError:
        return None


async def session_is_valid(request: Request, token: str) -> bool:
    """Whether a session token is valid now (read in a worker thread, never on the loop)."""
    settings: Settings = request.app.state.settings

    def check() -> bool:
        with request.app.state.session_factory() as session:
            return principal_of(session, settings, token) is not None

    return await run_in_threadpool(check)


def renewed_token(session: Session, settings: Settings, token: str) -> str | None:
    """A fresh token for a valid session token past half its life, None otherwise."""
    try:
        claims = credentials.decode_access_token(settings, token)
    except principals.AuthError:
        return None
    issued, expires = float(claims["iat"]), float(claims["exp"])  # type: ignore[arg-type]
    if time.time() < issued + (expires - issued) / 2:
        return None
    user = users.get_user(session, str(claims["sub"]))
    if user is None or user.disabled:
        return None
    return credentials.create_access_token(settings, user)


def csrf_key(settings: Settings) -> bytes:
    """The key CSRF tokens are signed with (derived from the service's signing secret)."""
    secret = credentials.jwt_secret_of(settings).encode("utf-8")
    return hmac.new(secret, b"rakuten-console-csrf", hashlib.sha256).digest()


def csrf_token(settings: Settings, session_token: str) -> str:
    """The CSRF token of the forms of one session."""
    return hmac.new(csrf_key(settings), session_token.encode("utf-8"), hashlib.sha256).hexdigest()


def new_login_nonce() -> str:
    """A random value for the sign-in form's double-submit cookie."""
    return secrets.token_urlsafe(32)


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two tokens (False when one is missing)."""
    return bool(expected) and given is not None and hmac.compare_digest(expected, given)
