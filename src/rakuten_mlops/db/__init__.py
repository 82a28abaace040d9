"""The service database: SQLAlchemy 2 models, sessions, data access and Alembic migrations."""
