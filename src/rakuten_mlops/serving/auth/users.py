"""Users: create, find, disable, change role or password, sign out everywhere; sign-in.

Changing the password or the role, disabling the user and "sign out everywhere" raise the
user's token version, so every token issued before is refused. The last enabled admin can
be neither disabled nor demoted.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from rakuten_mlops.db.models import User
from rakuten_mlops.serving.auth.passwords import (
    DUMMY_HASH,
    check_password_strength,
    hash_password,
    verify_password,
)
from rakuten_mlops.serving.auth.principals import AUTH_CHANGED, ROLES, Role, UserError, role_of

LAST_ADMIN = "the last enabled admin cannot be disabled or demoted"


def authenticate_user(session: Session, username: str, password: str) -> User | None:
    """The enabled user with this name and password, None otherwise (same cost either way)."""
    user = get_user(session, username)
    if user is None:
        verify_password(password, DUMMY_HASH)
        return None
    if not verify_password(password, user.password_hash) or user.disabled:
        return None
    return user


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
    return role_of(role)


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
