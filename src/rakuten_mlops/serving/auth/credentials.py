"""Tokens and API keys: how a request proves who it is.

* Access tokens are JWT signed with HS256 only (pyjwt): `sub` (user name), `uid`, `role`,
  `ver` (the user's token version), `iss`, `aud`, `iat`, `exp`. Tokens of any other
  algorithm (`none` included), a forged signature, an expired token, one of a user disabled
  (or deleted) since it was issued, or one issued before the user's token version was raised
  are refused (at once on this replica, within RAKUTEN_AUTH_CACHE_S on the others); the role
  in force is the user's current one.
* API keys (`X-API-Key`) look like `rk_<prefix>_<secret>`: the prefix finds the row, the
  SHA-256 of the whole key is compared in constant time; the key itself is shown once.

The review console signs in with the same functions (`users.authenticate_user`,
`create_access_token`, `principal_from_token`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from rakuten_mlops.config import Settings
from rakuten_mlops.db.models import ApiKey, User
from rakuten_mlops.serving.auth.principals import (
    AuthError,
    Principal,
    SecurityConfigError,
    UserError,
    UserState,
    role_of,
)
from rakuten_mlops.serving.auth.users import get_user, require_user

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "rk_"
# `last_used_at` of an API key is written at most this often (not a DB write per request).
LAST_USED_RESOLUTION = timedelta(seconds=60)


def jwt_secret_of(settings: Settings) -> str:
    """The signing key in force (settings are checked at start-up, see `resolve_secrets`).

    Raises:
        SecurityConfigError: no secret is configured.
    """
    if settings.jwt_secret is None:
        raise SecurityConfigError("RAKUTEN_JWT_SECRET is not set")
    return settings.jwt_secret.get_secret_value()


def create_access_token(settings: Settings, user: User, expires_in: timedelta | None = None) -> str:
    """A signed access token for `user` (HS256, expiry from RAKUTEN_ACCESS_TOKEN_EXPIRE_MINUTES)."""
    now = datetime.now(UTC)
    lifetime = expires_in or timedelta(minutes=settings.access_token_expire_minutes)
    claims = {
        "sub": user.username,
        "uid": user.id,
        "role": user.role,
        "ver": user.token_version or 0,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, jwt_secret_of(settings), algorithm=JWT_ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> dict[str, object]:
    """The verified claims of `token`.

    Raises:
        AuthError: bad signature, other algorithm, expired, wrong issuer/audience, malformed.
    """
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            jwt_secret_of(settings),
            algorithms=[JWT_ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError:
        raise AuthError("invalid token") from None
    return claims


def principal_from_token(session: Session, settings: Settings, token: str) -> Principal:
    """The caller of a bearer token, with the user's current role.

    Raises:
        AuthError: the token is invalid, or its user is unknown, replaced or disabled.
    """
    return authenticate_token(session, settings, token)[0]


def authenticate_token(session: Session, settings: Settings, token: str) -> tuple[Principal, float]:
    """The caller of a bearer token (see `principal_from_token`) and the token's expiry
    (Unix time).

    Raises:
        AuthError: the token is invalid, revoked (signed out, password or role changed), or
            its user is unknown, replaced or disabled.
    """
    claims = decode_access_token(settings, token)
    user = get_user(session, str(claims["sub"]))
    if user is None:
        raise AuthError("invalid token")
    return principal_of_claims(claims, UserState.of(user))


def principal_of_claims(claims: dict[str, object], user: UserState) -> tuple[Principal, float]:
    """The caller of verified token claims, checked against its user's state, and the
    token's expiry (Unix time).

    Raises:
        AuthError: the token is of another user of that name, revoked, or the user disabled.
    """
    if user.uid != claims.get("uid"):
        raise AuthError("invalid token")
    if user.disabled:
        raise AuthError("user disabled")
    if claims.get("ver", 0) != user.token_version:
        raise AuthError("token revoked: sign in again")
    expiry = claims["exp"]
    return Principal(str(claims["sub"]), role_of(user.role)), float(expiry)  # type: ignore[arg-type]


def _key_hash(key: str) -> str:
    # The key has 256 bits of entropy: a fast hash is enough (no dictionary to try).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, None otherwise."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    prefix, _, secret = key[len(API_KEY_PREFIX) :].partition("_")
    if len(prefix) != 12 or not secret:
        return None
    return prefix


def create_api_key(session: Session, username: str, name: str) -> tuple[ApiKey, str]:
    """A new API key of `username`: the stored row and the key (show it once; not stored).

    Raises:
        UserError: unknown user or an empty name.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise UserError("name: 1 to 100 characters")
    user = require_user(session, username)
    prefix = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(user_id=user.id, name=name, prefix=prefix, key_hash=_key_hash(key))
    session.add(row)
    session.flush()
    return row, key


def principal_from_api_key(session: Session, key: str) -> tuple[Principal, ApiKey]:
    """The caller of an API key (its user's name and current role) and the key's row.

    The use is recorded in `last_used_at` (at most once a minute).

    Raises:
        AuthError: unknown, malformed or revoked key, or its user is disabled.
    """
    prefix = _split_key(key)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix)) if prefix else None
    if row is None or not hmac.compare_digest(row.key_hash, _key_hash(key)):
        raise AuthError("invalid API key")
    if row.revoked_at is not None:
        raise AuthError("API key revoked")
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        raise AuthError("user disabled")
    now = datetime.now(UTC)
    last = _aware(row.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return Principal(user.username, role_of(user.role)), row


def list_api_keys(session: Session, username: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every API key (of one user when given) with its user name, newest first."""
    statement = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id)
    if username is not None:
        statement = statement.where(User.username == username)
    rows = session.execute(statement.order_by(ApiKey.id.desc())).all()
    return [(key, str(owner)) for key, owner in rows]


def revoke_api_key(session: Session, key_id: int) -> ApiKey:
    """Revoke an API key (idempotent; flushed, the caller commits).

    Raises:
        UserError: no such key.
    """
    row = session.get(ApiKey, key_id)
    if row is None:
        raise UserError(f"no API key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
    return row


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they are UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
