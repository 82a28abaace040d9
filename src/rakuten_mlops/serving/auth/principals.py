"""Who calls the service, and the errors of authentication and user management."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from rakuten_mlops.db.models import User
from rakuten_mlops.errors import RakutenError

Role = Literal["admin", "reviewer", "client"]
ROLES: tuple[str, ...] = get_args(Role)
# `session.info` flag: this session changed who a credential is (the auth cache drops its
# entries when the session commits).
AUTH_CHANGED = "rakuten_auth_changed"


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


def role_of(role: str) -> Role:
    """A stored role as a Role (an unknown one is the least privileged, `client`)."""
    return role if role in ROLES else "client"  # type: ignore[return-value]
