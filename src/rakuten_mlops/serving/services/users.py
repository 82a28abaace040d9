"""Users and API keys: the admin API (`/v1/admin/...`) and the console's Users page.

Passwords and key hashes are never returned; a new API key is shown once, in the answer
that creates it. Each change is committed before the answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import HTTPException, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy.orm import Session

from rakuten_mlops.db.models import ApiKey, User
from rakuten_mlops.serving.auth import credentials, passwords, principals, users
from rakuten_mlops.serving.auth.principals import Role

USERNAME_PATTERN = r"^[A-Za-z0-9._@-]{1,150}$"


def _not_only_dots(username: str) -> str:
    if not username.strip("."):  # `.` and `..` would change the meaning of `/users/<name>`
        raise ValueError("not only dots (. and .. are parts of a URL path)")
    return username


Username = Annotated[str, Field(pattern=USERNAME_PATTERN), AfterValidator(_not_only_dots)]


class UserOut(BaseModel):
    """A user (never its password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    disabled: bool
    created_at: datetime


class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "examples": [{"username": "alice", "password": "a long passphrase", "role": "reviewer"}]
        },
    )

    username: Username
    password: SecretStr = Field(min_length=passwords.MIN_PASSWORD_CHARS, max_length=256)
    role: Role


class UserUpdate(BaseModel):
    """Changes to a user: role, disabled, password (each optional)."""

    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [{"disabled": True}]})

    role: Role | None = None
    disabled: bool | None = None
    password: SecretStr | None = Field(
        default=None, min_length=passwords.MIN_PASSWORD_CHARS, max_length=256
    )


class ApiKeyOut(BaseModel):
    """An API key (its prefix identifies it; the key itself is never shown again)."""

    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreate(BaseModel):
    """A new API key for a user (it acts with that user's role)."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={"examples": [{"username": "merchant-tool", "name": "catalogue sync"}]},
    )

    username: Username
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")


class ApiKeyCreated(ApiKeyOut):
    """A new API key: `key` is shown this once; store it now."""

    key: str = Field(description="Send as `X-API-Key`. Shown once, stored hashed.")


def _fail(exc: principals.UserError) -> HTTPException:
    message = str(exc)
    if message.startswith("no "):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=message)
    if "exists already" in message or "last enabled admin" in message:
        return HTTPException(status.HTTP_409_CONFLICT, detail=message)
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=message)


def _key_out(row: ApiKey, username: str) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        username=username,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return users.list_users(session)


def create_user(session: Session, body: UserCreate) -> User:
    """Create a user with a role (409 if the name is taken)."""
    try:
        user = users.create_user(
            session, body.username, body.password.get_secret_value(), body.role
        )
    except principals.UserError as exc:
        raise _fail(exc) from None
    session.commit()
    return user


def update_user(session: Session, username: str, body: UserUpdate) -> User:
    """Change a user's role, disable or enable it, or set its password.

    The last enabled admin can be neither disabled nor demoted (409). A role or password
    change and a disable sign the user out everywhere (its earlier tokens are refused).
    """
    try:
        user = users.require_user(session, username)
        if body.role is not None:
            users.set_user_role(session, username, body.role)
        if body.disabled is not None:
            users.set_user_disabled(session, username, body.disabled)
        if body.password is not None:
            users.set_user_password(session, username, body.password.get_secret_value())
    except principals.UserError as exc:
        session.rollback()
        raise _fail(exc) from None
    session.commit()
    return user


def sign_out_user(session: Session, username: str) -> User:
    """Sign a user out everywhere: every access token and console session issued until now
    is refused (its API keys are revoked one by one)."""
    try:
        user = users.sign_out_everywhere(session, username)
    except principals.UserError as exc:
        raise _fail(exc) from None
    session.commit()
    return user


def list_api_keys(session: Session, username: str | None = None) -> list[ApiKeyOut]:
    """Every API key (prefix, owner, created, revoked, last used), newest first."""
    return [_key_out(row, owner) for row, owner in credentials.list_api_keys(session, username)]


def create_api_key(session: Session, body: ApiKeyCreate) -> ApiKeyCreated:
    """Create an API key for a user; the answer holds the key, shown this once."""
    try:
        row, key = credentials.create_api_key(session, body.username, body.name)
    except principals.UserError as exc:
        raise _fail(exc) from None
    session.commit()
    return ApiKeyCreated(**_key_out(row, body.username).model_dump(), key=key)


def revoke_api_key(session: Session, key_id: int) -> ApiKeyOut:
    """Revoke an API key (it stops working at once; idempotent)."""
    try:
        row = credentials.revoke_api_key(session, key_id)
    except principals.UserError as exc:
        raise _fail(exc) from None
    session.commit()
    owner = session.get(User, row.user_id)
    return _key_out(row, owner.username if owner else "")
