"""Apply the Alembic migrations of the service database (`rakuten-mlops db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rakuten_mlops.db.session import (
    DatabaseError,
    database_error_reason,
    make_engine,
    normalize_url,
    redact_database_url,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock held by the migrating transaction: replicas that start together on
# an empty database migrate one after the other (the later ones find it at head), instead of
# racing to create the same tables. Any constant that no other code locks.
MIGRATION_LOCK_KEY = 0x52414B55  # "RAKU"


def alembic_config(url: str) -> Config:
    """An Alembic configuration built in code: scripts in `db/migrations`, the given URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # `%` is ConfigParser interpolation: escape it (passwords may contain it).
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> str | None:
    """Migrate the database at `url` to `revision`; returns the revision reached.

    Raises:
        DatabaseError: the database cannot be reached or a migration fails.
    """
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Released with the transaction, when the migrations are committed.
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": MIGRATION_LOCK_KEY})
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return current_revision_of(engine)
    except SQLAlchemyError as exc:
        reason = database_error_reason(exc)
        raise DatabaseError(
            f"cannot migrate the service database {redact_database_url(url)}: {reason}; check "
            "RAKUTEN_DATABASE_URL and that the database server is running"
        ) from exc
    finally:
        engine.dispose()


def current_revision_of(engine: object) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return MigrationContext.configure(connection).get_current_revision()


def check_service_database(url: str) -> None:
    """Check that the service database exists, answers and is migrated, without creating or
    changing anything (for the commands that only read it).

    Raises:
        DatabaseError: one line naming the URL in force (password hidden) and the fix.
    """
    shown = redact_database_url(url)
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise DatabaseError(f"RAKUTEN_DATABASE_URL is not a database URL: {shown}") from None
    database = parsed.database or ""
    local = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if local and not Path(database).is_file():
        raise DatabaseError(
            f"no service database at {database} (RAKUTEN_DATABASE_URL={shown}): set "
            "RAKUTEN_DATABASE_URL to the service's database, or start the service / run "
            "`rakuten-mlops db upgrade` to create it"
        )
    engine = make_engine(url)
    try:
        revision = current_revision_of(engine)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot reach the service database {shown}: {database_error_reason(exc)}; check "
            "RAKUTEN_DATABASE_URL "
            "and that the database server is running"
        ) from None
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if revision != head:
        raise DatabaseError(
            f"the service database {shown} is not migrated (revision {revision or 'none'}, "
            f"expected {head}): run `rakuten-mlops db upgrade` (the service does it at start)"
        )
