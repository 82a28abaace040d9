"""Who may call the service: password hashing, access tokens, API keys, start-up secrets.

* Passwords are hashed with argon2 (pwdlib); a failed login costs as much as a good one
  (a dummy hash is verified for unknown users) so user names cannot be probed by timing.
* Access tokens are JWT signed with HS256 only (pyjwt): `sub` (user name), `uid`, `role`,
  `iss`, `aud`, `iat`, `exp`. Tokens of any other algorithm (`none` included), a forged
  signature, an expired token or one of a user disabled (or deleted) since it was issued
  are refused; the role in force is the user's current one, read at each request.
* Tokens carry the user's `ver` (token version): changing the password or the role,
  disabling the user and "sign out everywhere" raise it, so every token issued before is
  refused (at once on this replica, within RAKUTEN_AUTH_CACHE_S on the others).
* API keys (`X-API-Key`) look like `rk_<prefix>_<secret>`: the prefix finds the row, the
  SHA-256 of the whole key is compared in constant time; the key itself is shown once.

The review console signs in with the same functions: `authenticate_user`,
`create_access_token`, `principal_from_token`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from rakuten_mlops import secret_rules
from rakuten_mlops.config import Settings
from rakuten_mlops.db.models import ApiKey, User
from rakuten_mlops.errors import RakutenError

Role = Literal["admin", "reviewer", "client"]
ROLES: tuple[str, ...] = get_args(Role)
JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "rk_"
MIN_JWT_SECRET_CHARS = secret_rules.MIN_JWT_SECRET_CHARS
MIN_PASSWORD_CHARS = 8
MIN_ADMIN_PASSWORD_CHARS = secret_rules.MIN_ADMIN_PASSWORD_CHARS
# `session.info` flag: this session changed who a credential is (the auth cache drops its
# entries when the session commits).
AUTH_CHANGED = "rakuten_auth_changed"
LAST_ADMIN = "the last enabled admin cannot be disabled or demoted"
# `last_used_at` of an API key is written at most this often (not a DB write per request).
LAST_USED_RESOLUTION = timedelta(seconds=60)

# argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): a login costs tens of
# milliseconds, not hundreds, on a small CPU; hashes keep their parameters, so raising them
# later still verifies older hashes.
_password_hash = PasswordHash((Argon2Hasher(time_cost=2, memory_cost=19 * 1024, parallelism=1),))
_DUMMY_HASH = _password_hash.hash(secrets.token_urlsafe(16))


class AuthError(Exception):
    """A credential is missing, invalid, expired, revoked, or its user is disabled.

    The message is safe to show to the caller (it never contains the credential).
    """


class SecurityConfigError(RakutenError):
    """A secret is missing or a placeholder outside `RAKUTEN_ENV=dev`."""


class UserError(RakutenError, ValueError):
    """A user or API key operation is invalid (unknown user, duplicate, bad role...)."""


@dataclass(frozen=True)
class Principal:
    """Who calls the API: a user name and its role (re-exported by `serving.deps`)."""

    username: str
    role: Role


# Passwords -------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """The argon2 hash of `password` (with its own salt and parameters)."""
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches `password_hash` (False for a malformed hash)."""
    try:
        return bool(_password_hash.verify(password, password_hash))
    except Exception:  # an unknown or damaged hash format is a failed login, not a 500
        return False


def check_password_strength(password: str) -> None:
    """Refuse passwords too short or a known placeholder.

    Raises:
        UserError: the password is not acceptable.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"password: at least {MIN_PASSWORD_CHARS} characters")
    if secret_rules.looks_like_placeholder(password):
        raise UserError("password: a placeholder or a common password, choose a real one")


def digest_for_log(username: str) -> str:
    """What the logs say of a submitted user name: a short SHA-256 digest and its length (a
    name typed in the password field must not end up in the logs)."""
    digest = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:12]
    return f"sha256:{digest}/{len(username)}"


def authenticate_user(session: Session, username: str, password: str) -> User | None:
    """The enabled user with this name and password, None otherwise (same cost either way)."""
    user = get_user(session, username)
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if not verify_password(password, user.password_hash) or user.disabled:
        return None
    return user


# Access tokens ---------------------------------------------------------------------------


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


@dataclass(frozen=True)
class UserState:
    """What a token is checked against: the user's id, role, disabled flag, token version."""

    uid: int
    role: str
    disabled: bool
    token_version: int

    @classmethod
    def of(cls, user: User) -> UserState:
        """The state of a user row."""
        return cls(user.id, user.role, bool(user.disabled), user.token_version or 0)


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
    return Principal(str(claims["sub"]), _role(user.role)), float(expiry)  # type: ignore[arg-type]


# API keys --------------------------------------------------------------------------------


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
    return Principal(user.username, _role(user.role)), row


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


# Users -----------------------------------------------------------------------------------


def get_user(session: Session, username: str) -> User | None:
    """The user with this name, None when unknown."""
    return session.scalar(select(User).where(User.username == username))


def require_user(session: Session, username: str) -> User:
    """The user with this name.

    Raises:
        UserError: unknown user.
    """
    user = get_user(session, username)
    if user is None:
        raise UserError(f"no user {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.username)))


def validate_role(role: str) -> Role:
    """`role` as a Role.

    Raises:
        UserError: not one of admin, reviewer, client.
    """
    if role not in ROLES:
        raise UserError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    return _role(role)


def _role(role: str) -> Role:
    return role if role in ROLES else "client"  # type: ignore[return-value]


def validate_username(username: str) -> str:
    """A user name: 1 to 150 ASCII letters, digits or `._@-`, not only dots (`.` and `..`
    would change the meaning of a URL path such as `/v1/admin/users/<name>`).

    Raises:
        UserError: empty, too long, only dots or other characters.
    """
    if not 1 <= len(username) <= 150 or not all(
        c.isascii() and (c.isalnum() or c in "._@-") for c in username
    ):
        raise UserError("username: 1 to 150 letters, digits or . _ @ -")
    if not username.strip("."):
        raise UserError("username: not only dots (. and .. are parts of a URL path)")
    return username


def create_user(session: Session, username: str, password: str, role: str) -> User:
    """A new enabled user (flushed; the caller commits).

    Raises:
        UserError: invalid name, role or password, or the name is taken.
    """
    validate_username(username)
    validate_role(role)
    check_password_strength(password)
    if get_user(session, username) is not None:
        raise UserError(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def _update_user(
    session: Session, user: User, values: dict[str, object], *, keep_an_admin: bool = False
) -> None:
    """Write `values` to `user` and raise its token version (every earlier token is refused).

    With `keep_an_admin`, the write happens only if another enabled admin remains, checked
    in the same statement (atomic on SQLite, whose writes are serialised) after locking the
    enabled admins' rows (PostgreSQL: a concurrent demotion waits, then sees this one).

    Raises:
        UserError: `keep_an_admin` and `user` is the last enabled admin.
    """
    statement = (
        update(User)
        .where(User.id == user.id)
        .values(**values, token_version=User.token_version + 1)
        .execution_options(synchronize_session=False)
    )
    if keep_an_admin:
        session.flush()
        # FOR UPDATE (nothing on SQLite): two demotions of two admins cannot both pass.
        session.scalars(
            select(User.id).where(User.role == "admin", User.disabled.is_(False)).with_for_update()
        ).all()
        other = aliased(User)
        others = (
            select(func.count())
            .select_from(other)
            .where(other.role == "admin", other.disabled.is_(False), other.id != user.id)
            .scalar_subquery()
        )
        statement = statement.where(others > 0)
    result = session.execute(statement)
    if getattr(result, "rowcount", 1) == 0:
        raise UserError(LAST_ADMIN)
    session.info[AUTH_CHANGED] = True
    session.expire(user)


def _is_enabled_admin(user: User) -> bool:
    return user.role == "admin" and not user.disabled


def set_user_disabled(session: Session, username: str, disabled: bool = True) -> User:
    """Disable (or enable) a user: its tokens and API keys stop working at once.

    Raises:
        UserError: unknown user, or the last enabled admin would be disabled.
    """
    user = require_user(session, username)
    if bool(user.disabled) != disabled:
        keep = disabled and _is_enabled_admin(user)
        _update_user(session, user, {"disabled": disabled}, keep_an_admin=keep)
    return user


def set_user_role(session: Session, username: str, role: str) -> User:
    """Change a user's role (in force at its next request; its earlier tokens are refused).

    Raises:
        UserError: unknown user or role, or the last enabled admin would be demoted.
    """
    new_role = validate_role(role)
    user = require_user(session, username)
    if user.role != new_role:
        keep = _is_enabled_admin(user) and new_role != "admin"
        _update_user(session, user, {"role": new_role}, keep_an_admin=keep)
    return user


def set_user_password(session: Session, username: str, password: str) -> User:
    """Set a user's password (every token issued before is refused).

    Raises:
        UserError: unknown user or a weak password.
    """
    check_password_strength(password)
    user = require_user(session, username)
    _update_user(session, user, {"password_hash": hash_password(password)})
    return user


def sign_out_everywhere(session: Session, username: str) -> User:
    """Refuse every access token and console session of `username` issued until now (its API
    keys are revoked one by one, `revoke_api_key`).

    Raises:
        UserError: unknown user.
    """
    user = require_user(session, username)
    _update_user(session, user, {})
    return user


def count_enabled_admins(session: Session) -> int:
    """How many enabled admins exist."""
    statement = (
        select(func.count()).select_from(User).where(User.role == "admin", User.disabled.is_(False))
    )
    return int(session.scalar(statement) or 0)


# Start-up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartupSecrets:
    """The secrets the app runs with, and what was generated for a dev run."""

    settings: Settings
    generated_jwt_secret: bool
    generated_admin_password: str | None


def resolve_secrets(settings: Settings) -> StartupSecrets:
    """Check the secrets; in `RAKUTEN_ENV=dev`, generate the missing ones.

    Outside dev, the start is refused for: a missing JWT secret; any secret (JWT secret, admin
    password, metrics token, service API key, the passwords inside the database and Redis
    URLs) that looks like a placeholder (`secret_rules.looks_like_placeholder`); a JWT secret
    shorter than 32 characters or an admin password shorter than 12; and, in prod, the
    development values committed to the repository (`dev-only-...`, `tests-only-...`). A
    missing admin password is refused later, only when an admin has to be created.

    Raises:
        SecurityConfigError: a secret is unusable outside dev (the message names every one).
    """
    dev = settings.env == "dev"
    updates: dict[str, object] = {}
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    password = settings.admin_password.get_secret_value() if settings.admin_password else ""
    if not dev:
        problems = [] if secret else ["RAKUTEN_JWT_SECRET is not set"]
        problems += secret_rules.check_secrets(
            {
                "RAKUTEN_JWT_SECRET": secret,
                "RAKUTEN_ADMIN_PASSWORD": password,
                "RAKUTEN_METRICS_TOKEN": _secret_value(settings.metrics_token),
                "RAKUTEN_SERVICE_API_KEY": _secret_value(settings.service_api_key),
                "RAKUTEN_DATABASE_URL": settings.database_url,
                "RAKUTEN_REDIS_URL": settings.redis_url,
            },
            settings.env,
            minimum={
                "RAKUTEN_JWT_SECRET": MIN_JWT_SECRET_CHARS,
                "RAKUTEN_ADMIN_PASSWORD": MIN_ADMIN_PASSWORD_CHARS,
            },
        )
        if problems:
            raise SecurityConfigError(
                "; ".join(problems)
                + " (a random one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
    generated_secret = False
    if dev and (
        not secret
        or secret_rules.looks_like_placeholder(secret)
        or len(secret) < MIN_JWT_SECRET_CHARS
    ):
        updates["jwt_secret"] = SecretStr(secrets.token_urlsafe(48))
        generated_secret = True
    generated_password: str | None = None
    if dev and (
        not password
        or secret_rules.looks_like_placeholder(password)
        or len(password) < MIN_PASSWORD_CHARS
    ):
        generated_password = secrets.token_urlsafe(12)
        updates["admin_password"] = SecretStr(generated_password)
    resolved = settings.model_copy(update=updates) if updates else settings
    return StartupSecrets(resolved, generated_secret, generated_password)


def _secret_value(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def ensure_first_admin(session: Session, settings: Settings) -> User | None:
    """Create the admin of RAKUTEN_ADMIN_USERNAME / _PASSWORD when no enabled admin exists.

    Returns the created user, None when an admin exists already.

    Raises:
        SecurityConfigError: an admin is needed but RAKUTEN_ADMIN_PASSWORD is not set.
    """
    if count_enabled_admins(session) > 0:
        return None
    if settings.admin_password is None:
        raise SecurityConfigError(
            "no admin exists and RAKUTEN_ADMIN_PASSWORD is not set: set it (with "
            "RAKUTEN_ADMIN_USERNAME) or create one with `rakuten-mlops users create`"
        )
    username = settings.admin_username
    existing = get_user(session, username)
    if existing is not None:
        raise SecurityConfigError(
            f"no enabled admin exists and user {username!r} is not one: fix it with "
            "`rakuten-mlops users set-role` / `users create`"
        )
    try:
        user = create_user(
            session, username, settings.admin_password.get_secret_value(), role="admin"
        )
        session.commit()
    except IntegrityError:  # another worker created it at the same moment
        session.rollback()
        return None
    return user


def announce_dev_secrets(secrets_: StartupSecrets, admin_created: bool) -> None:
    """Say on stderr (never in the logs) what was generated for this dev run."""
    if secrets_.generated_jwt_secret:
        print(
            "RAKUTEN_ENV=dev: RAKUTEN_JWT_SECRET not set, a random one was generated "
            "(tokens die with this process)",
            file=sys.stderr,
        )
    if admin_created and secrets_.generated_admin_password:
        print(
            f"RAKUTEN_ENV=dev: first admin {secrets_.settings.admin_username!r} created with "
            f"the one-time password {secrets_.generated_admin_password} "
            "(shown once; change it or set RAKUTEN_ADMIN_PASSWORD)",
            file=sys.stderr,
        )


def prepare_serve(settings: Settings) -> None:
    """Before `serve` starts its workers: check the secrets (refuse outside dev), create the
    first admin once, and share a dev run's generated JWT secret with every worker (through
    the environment, so that a token of one worker is valid on the others).

    Raises:
        SecurityConfigError: unusable secrets outside dev, or no admin and no password.
    """
    from rakuten_mlops.db.session import make_engine, make_session_factory

    resolved = resolve_secrets(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            created = ensure_first_admin(session, resolved.settings)
    finally:
        engine.dispose()
    announce_dev_secrets(resolved, created is not None)
    if resolved.generated_jwt_secret and resolved.settings.jwt_secret is not None:
        os.environ["RAKUTEN_JWT_SECRET"] = resolved.settings.jwt_secret.get_secret_value()


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they are UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
