"""Declarative base of every table of the service database."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Base class of the service's tables (`db/models.py`)."""
