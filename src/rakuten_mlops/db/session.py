"""Engines and sessions: SQLite (WAL, foreign keys) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from rakuten_mlops.errors import RakutenError


class DatabaseError(RakutenError):
    """The service database cannot be reached, created or migrated."""


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs (the one installed)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def database_error_reason(exc: BaseException) -> str:
    """The first line of what the database driver said (SQLAlchemy adds pages around it)."""
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]


def redact_database_url(url: str) -> str:
    """A database URL with its password hidden (for messages and logs)."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show only its scheme
        return url.split(":", 1)[0] + ":..."


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL, a busy timeout and foreign keys.

    The folder of a SQLite file is created when missing.

    Raises:
        DatabaseError: the URL is not a valid database URL.
    """
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"RAKUTEN_DATABASE_URL is not a database URL: {url!r}") from exc
    if parsed.get_backend_name() != "sqlite":
        try:
            # A down server answers in seconds, not minutes: connections time out after 3 s
            # and a request waits at most 5 s for one from the pool.
            return create_engine(
                url,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=10,
                pool_timeout=5,
                connect_args={"connect_timeout": 3},
            )
        except (ArgumentError, ImportError) as exc:
            raise DatabaseError(
                f"RAKUTEN_DATABASE_URL: unsupported database {parsed.drivername!r} "
                "(use sqlite:///path or postgresql+psycopg://...)"
            ) from exc
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path not in ("", ":memory:") else None
