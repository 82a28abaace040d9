"""Sign in and out: `POST /token` (OAuth2 password flow) answers a signed access token;
`POST /v1/auth/logout` signs the caller out everywhere (every token issued until now)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from rakuten_mlops.serving.auth import credentials, users
from rakuten_mlops.serving.deps import (
    AUTHENTICATE,
    CurrentPrincipal,
    Role,
    SessionDep,
    SettingsDep,
    check_login,
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
        429: {
            "model": ErrorResponse,
            "description": "Too many attempts from this address or for this user name.",
        },
    },
)
async def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenResponse:
    """Exchange a user name and password (form fields) for an access token."""
    user = await check_login(request, session, form.username, form.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="incorrect user name or password",
            headers=AUTHENTICATE,
        )
    token = credentials.create_access_token(settings, user)
    return TokenResponse(
        access_token=token,
        expires_in=settings.access_token_expire_minutes * 60,
        role=users.validate_role(user.role),
    )


class LogoutResponse(BaseModel):
    """The caller is signed out everywhere."""

    username: str
    signed_out: Literal[True] = True


@router.post(
    "/v1/auth/logout",
    response_model=LogoutResponse,
    responses={401: {"model": ErrorResponse, "description": "No valid token or API key."}},
)
async def logout(request: Request, principal: CurrentPrincipal) -> LogoutResponse:
    """Sign out everywhere: every access token and console session of the caller issued until
    now is refused from now on (API keys stay valid: revoke them one by one)."""

    def sign_out() -> None:
        with request.app.state.session_factory() as session:
            users.sign_out_everywhere(session, principal.username)
            session.commit()

    await run_in_threadpool(sign_out)
    return LogoutResponse(username=principal.username)
