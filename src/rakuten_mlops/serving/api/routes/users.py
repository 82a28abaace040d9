"""Administration of users and API keys (admin only).

Passwords and key hashes are never returned; a new API key is shown once, in the answer
that creates it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from rakuten_mlops.db.models import User
from rakuten_mlops.serving.deps import SessionDep, require_role
from rakuten_mlops.serving.schemas import MAX_DB_INT, ErrorResponse
from rakuten_mlops.serving.services import users as service
from rakuten_mlops.serving.services.users import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_role("admin"))],
    responses={
        404: {"model": ErrorResponse, "description": "Unknown user or key."},
        409: {"model": ErrorResponse, "description": "Conflicts with existing users."},
        422: {"model": ErrorResponse, "description": "Invalid body; `errors` names the field."},
    },
)


@router.get("/users", response_model=list[UserOut])
def list_users(session: SessionDep) -> list[User]:
    """Every user, by name."""
    return service.list_users(session)


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep) -> User:
    """Create a user with a role."""
    return service.create_user(session, body)


@router.patch("/users/{username}", response_model=UserOut)
def update_user(username: str, body: UserUpdate, session: SessionDep) -> User:
    """Change a user's role, disable or enable it, or set its password.

    The last enabled admin can be neither disabled nor demoted (409). A role or password
    change and a disable sign the user out everywhere (its earlier tokens are refused).
    """
    return service.update_user(session, username, body)


@router.post("/users/{username}/sign-out", response_model=UserOut)
def sign_out_user(username: str, session: SessionDep) -> User:
    """Sign a user out everywhere: every access token and console session issued until now
    is refused (its API keys are revoked one by one)."""
    return service.sign_out_user(session, username)


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(
    session: SessionDep,
    username: Annotated[str | None, Query(description="Only this user's keys.")] = None,
) -> list[ApiKeyOut]:
    """Every API key (prefix, owner, created, revoked, last used), newest first."""
    return service.list_api_keys(session, username)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_api_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    """Create an API key for a user; the answer holds the key, shown this once."""
    return service.create_api_key(session, body)


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_DB_INT)], session: SessionDep
) -> ApiKeyOut:
    """Revoke an API key (it stops working at once; idempotent)."""
    return service.revoke_api_key(session, key_id)
