"""Users and API keys (admins), through the same service functions as the admin API."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from rakuten_mlops.serving.auth.principals import ROLES
from rakuten_mlops.serving.console.access import AdminDep, ConsoleRoute, CsrfDep
from rakuten_mlops.serving.console.rendering import render
from rakuten_mlops.serving.deps import SessionDep
from rakuten_mlops.serving.schemas import MAX_DB_INT
from rakuten_mlops.serving.services import users as user_service
from rakuten_mlops.serving.services.users import ApiKeyCreated

router = APIRouter(prefix="/console", route_class=ConsoleRoute)
BodyT = TypeVar("BodyT", bound=BaseModel)


def _body(model: type[BodyT], **values: Any) -> BodyT:
    """A request body of the API's admin routes, or the console's 422 page naming the field."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


def _admin_context(session: SessionDep, created_key: ApiKeyCreated | None = None) -> dict[str, Any]:
    return {
        "users": user_service.list_users(session),
        "keys": user_service.list_api_keys(session),
        "roles": ROLES,
        "created_key": created_key,
    }


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, session: SessionDep, principal: AdminDep) -> Response:
    """Users (role, enabled) and API keys, with the forms to change them."""
    return render(request, "users.html", _admin_context(session))


@router.post("/admin/users", dependencies=[CsrfDep])
def create_user(
    session: SessionDep,
    principal: AdminDep,
    username: Annotated[str, Form(max_length=150)],
    password: Annotated[str, Form(max_length=256)],
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    """Create a user (the API's `POST /v1/admin/users`)."""
    user_service.create_user(
        session,
        _body(user_service.UserCreate, username=username.strip(), password=password, role=role),
    )
    return RedirectResponse(
        "/console/admin/users?notice=user-created", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/admin/users/{username}", dependencies=[CsrfDep])
def update_user(
    username: str,
    session: SessionDep,
    principal: AdminDep,
    role: Annotated[str | None, Form(max_length=16)] = None,
    disabled: Annotated[bool | None, Form()] = None,
) -> Response:
    """Change a user's role or disable / enable it (the API's `PATCH /v1/admin/users/...`)."""
    user_service.update_user(
        session, username, _body(user_service.UserUpdate, role=role, disabled=disabled)
    )
    return RedirectResponse(
        "/console/admin/users?notice=user-updated", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/admin/users/{username}/sign-out", dependencies=[CsrfDep])
def sign_out_user(username: str, session: SessionDep, principal: AdminDep) -> Response:
    """Sign a user out everywhere (the API's `POST /v1/admin/users/.../sign-out`)."""
    user_service.sign_out_user(session, username)
    return RedirectResponse(
        "/console/admin/users?notice=user-signed-out", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/admin/api-keys", response_class=HTMLResponse, dependencies=[CsrfDep])
def create_api_key(
    request: Request,
    session: SessionDep,
    principal: AdminDep,
    username: Annotated[str, Form(max_length=150)],
    name: Annotated[str, Form(max_length=100)],
) -> Response:
    """Create an API key; the page shows it this once."""
    created = user_service.create_api_key(
        session, _body(user_service.ApiKeyCreate, username=username, name=name.strip())
    )
    return render(request, "users.html", _admin_context(session, created))


@router.post("/admin/api-keys/{key_id}/revoke", dependencies=[CsrfDep])
def revoke_api_key(
    key_id: Annotated[int, PathParam(ge=1, le=MAX_DB_INT)], session: SessionDep, principal: AdminDep
) -> Response:
    """Revoke an API key (the API's `DELETE /v1/admin/api-keys/...`)."""
    user_service.revoke_api_key(session, key_id)
    return RedirectResponse(
        "/console/admin/users?notice=key-revoked", status_code=status.HTTP_303_SEE_OTHER
    )
