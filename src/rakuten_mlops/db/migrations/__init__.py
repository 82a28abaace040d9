"""Alembic environment of the service database (configured in code, no alembic.ini)."""
