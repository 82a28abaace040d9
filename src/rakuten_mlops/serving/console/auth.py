"""Console sign-in: a session cookie holding a signed access token, and CSRF tokens.

The session cookie carries the same signed access token as the API's `POST /token`
(`create_access_token`), checked at every request with `principal_from_token`, so a
disabled user or a changed role is in force at once. CSRF tokens are HMACs of the session
token (a double-submit nonce cookie before sign-in), so every form proves it was served to
the holder of the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.orm import Session

from rakuten_mlops.config import Settings
from rakuten_mlops.serving import security
from rakuten_mlops.serving.deps import Principal

SESSION_COOKIE = "rakuten_console"
LOGIN_CSRF_COOKIE = "rakuten_console_login"


def sign_in(session: Session, settings: Settings, username: str, password: str) -> str | None:
    """A session token (the API's access token) for this user name and password, or None."""
    user = security.authenticate_user(session, username, password)
    if user is None:
        return None
    return security.create_access_token(settings, user)


def principal_of(session: Session, settings: Settings, token: str) -> Principal | None:
    """The signed-in user of a session token; None when it is invalid, expired or disabled."""
    try:
        return security.principal_from_token(session, settings, token)
    except security.AuthError:
        return None


def csrf_key(settings: Settings) -> bytes:
    """The key CSRF tokens are signed with (derived from the service's signing secret)."""
    secret = security.jwt_secret_of(settings).encode("utf-8")
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
