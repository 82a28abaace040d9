"""Log in: `POST /token` (OAuth2 password flow) answers a signed access token."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from rakuten_mlops.serving import security
from rakuten_mlops.serving.deps import (
    AUTHENTICATE,
    Role,
    SessionDep,
    SettingsDep,
    limit_token_requests,
)
from rakuten_mlops.serving.schemas import ErrorResponse

logger = logging.getLogger(__name__)
router = APIRouter(tags=["auth"])


class TokenResponse(BaseModel):
    """A bearer access token (send it as `Authorization: Bearer <access_token>`)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
    role: Role


@router.post(
    "/token",
    response_model=TokenResponse,
    dependencies=[Depends(limit_token_requests)],
    responses={
        401: {"model": ErrorResponse, "description": "Wrong user name or password."},
        422: {"model": ErrorResponse, "description": "Missing field; `errors` names it."},
        429: {"model": ErrorResponse, "description": "Too many attempts from this address."},
    },
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenResponse:
    """Exchange a user name and password (form fields) for an access token."""
    user = security.authenticate_user(session, form.username, form.password)
    if user is None:
        logger.info("login refused", extra={"username": form.username[:150]})
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="incorrect user name or password",
            headers=AUTHENTICATE,
        )
    token = security.create_access_token(settings, user)
    return TokenResponse(
        access_token=token,
        expires_in=settings.access_token_expire_minutes * 60,
        role=security.validate_role(user.role),
    )
