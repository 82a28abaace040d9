"""Start-up secrets: refuse unusable ones outside dev, generate a dev run's, create the
first admin."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rakuten_mlops import secret_rules
from rakuten_mlops.config import Settings
from rakuten_mlops.db.models import User
from rakuten_mlops.serving.auth.passwords import MIN_PASSWORD_CHARS
from rakuten_mlops.serving.auth.principals import SecurityConfigError
from rakuten_mlops.serving.auth.users import count_enabled_admins, create_user, get_user

MIN_JWT_SECRET_CHARS = secret_rules.MIN_JWT_SECRET_CHARS
MIN_ADMIN_PASSWORD_CHARS = secret_rules.MIN_ADMIN_PASSWORD_CHARS


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
        if existing.role == "admin" and count_enabled_admins(session) > 0:
            return None  # another replica created it between the two reads
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
