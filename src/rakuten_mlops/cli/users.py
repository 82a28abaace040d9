"""`rakuten-mlops users create|list|disable|enable|set-role|set-password|sign-out|api-key`: the
service's users and API keys, in RAKUTEN_DATABASE_URL (migrated first).

Passwords are read from stdin (`--password-stdin`) or a hidden prompt, never from argv.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from sqlalchemy.orm import Session

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import get_settings

users_app = typer.Typer(
    help="Service users (admin, reviewer, client) and API keys.", no_args_is_help=True
)
api_key_app = typer.Typer(
    help="API keys of machine clients (shown once, stored hashed).", no_args_is_help=True
)
users_app.add_typer(api_key_app, name="api-key")

RoleOption = Annotated[str, typer.Option("--role", help="admin | reviewer | client.")]
T = TypeVar("T")


def register_users_commands(app: typer.Typer) -> None:
    """Add the `users` group to the root app."""
    app.add_typer(users_app, name="users")


@contextmanager
def _session() -> Iterator[Session]:
    from rakuten_mlops.db.migrate import upgrade_database
    from rakuten_mlops.db.session import make_engine, make_session_factory

    url = get_settings().database_url
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _in_session(action: Callable[[Session], T]) -> T:
    """Run `action` in a session and commit; `UserError`s become CLI errors."""
    with _session() as session:
        result = action(session)
        session.commit()
        return result


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("create")
@handle_errors
def create(
    username: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: RoleOption,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
) -> None:
    """Create a user (the password is prompted for, or read from stdin)."""
    from rakuten_mlops.serving.auth import users

    users.validate_username(username)
    users.validate_role(role)
    password = _read_password(password_stdin)
    user = _in_session(lambda s: users.create_user(s, username, password, role))
    console.print(f"user {user.username!r} created with role {user.role}", highlight=False)


@users_app.command("list")
@handle_errors
def list_users() -> None:
    """List the users: name, role, disabled, created."""
    from rakuten_mlops.serving.auth import users

    everyone = _in_session(users.list_users)
    for user in everyone:
        state = "disabled" if user.disabled else "enabled"
        console.print(
            f"{user.username:<30} {user.role:<9} {state:<9} {user.created_at:%Y-%m-%d %H:%M}",
            highlight=False,
        )
    if not users:
        console.print("no users")


@users_app.command("disable")
@handle_errors
def disable(username: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Disable a user: its tokens and API keys stop working (a running service notices
    within RAKUTEN_AUTH_CACHE_S seconds)."""
    from rakuten_mlops.serving.auth import users

    _in_session(lambda s: users.set_user_disabled(s, username, True))
    console.print(f"user {username!r} disabled", highlight=False)


@users_app.command("enable")
@handle_errors
def enable(username: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Enable a disabled user again."""
    from rakuten_mlops.serving.auth import users

    _in_session(lambda s: users.set_user_disabled(s, username, False))
    console.print(f"user {username!r} enabled", highlight=False)


@users_app.command("set-role")
@handle_errors
def set_role(
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="admin | reviewer | client.")],
) -> None:
    """Change a user's role (in force at its next request)."""
    from rakuten_mlops.serving.auth import users

    _in_session(lambda s: users.set_user_role(s, username, role))
    console.print(f"user {username!r} is now {role}", highlight=False)


@users_app.command("set-password")
@handle_errors
def set_password(
    username: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
) -> None:
    """Set a user's password (prompted for, or read from stdin)."""
    from rakuten_mlops.serving.auth import users

    password = _read_password(password_stdin)
    _in_session(lambda s: users.set_user_password(s, username, password))
    console.print(f"password of {username!r} changed", highlight=False)


@users_app.command("sign-out")
@handle_errors
def sign_out(username: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Sign a user out everywhere: every token and console session issued until now is
    refused (a running service notices within RAKUTEN_AUTH_CACHE_S seconds)."""
    from rakuten_mlops.serving.auth import users

    _in_session(lambda s: users.sign_out_everywhere(s, username))
    console.print(f"user {username!r} signed out everywhere", highlight=False)


@api_key_app.command("create")
@handle_errors
def api_key_create(
    username: Annotated[str, typer.Argument(help="The user the key acts as (and its role).")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "cli",
) -> None:
    """Create an API key and print it once (store it now; only its hash is kept)."""
    from rakuten_mlops.serving.auth import credentials

    row, key = _in_session(lambda s: credentials.create_api_key(s, username, name))
    typer.echo(f"API key {row.id} ({row.prefix}) for {username!r}; shown once:", err=True)
    typer.echo(key)


@api_key_app.command("list")
@handle_errors
def api_key_list(
    username: Annotated[str | None, typer.Argument(help="Only this user's keys.")] = None,
) -> None:
    """List API keys: id, prefix, user, name, created, last used, revoked."""
    from rakuten_mlops.serving.auth import credentials

    rows = _in_session(lambda s: credentials.list_api_keys(s, username))
    for row, owner in rows:
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        revoked = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        console.print(
            f"{row.id:>4} {row.prefix} {owner:<20} {row.name:<20} used {used:<16} {revoked}",
            highlight=False,
        )
    if not rows:
        console.print("no API keys")


@api_key_app.command("revoke")
@handle_errors
def api_key_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see list).")]) -> None:
    """Revoke an API key (a running service refuses it within RAKUTEN_AUTH_CACHE_S seconds)."""
    from rakuten_mlops.serving.auth import credentials

    row = _in_session(lambda s: credentials.revoke_api_key(s, key_id))
    console.print(f"API key {row.id} ({row.prefix}) revoked", highlight=False)
