"""Tables of the service database (every area adds its classes here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from rakuten_mlops.db.base import Base, UtcDateTime


def new_prediction_id() -> str:
    """A prediction id: a uuid4 in hex (32 characters)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Prediction(Base):
    """One answered (or shadow) prediction, with its input text (never the image bytes)."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_prediction_id)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    productid: Mapped[str | None] = mapped_column(String(64))
    imageid: Mapped[str | None] = mapped_column(String(64))
    designation: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    has_image: Mapped[bool] = mapped_column(Boolean, default=False)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    image_path: Mapped[str | None] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(64))
    model_alias: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(16), default="champion", index=True)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    prdtypecode: Mapped[int] = mapped_column(Integer, index=True)
    confidence: Mapped[float] = mapped_column(Float)
    top3: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    username: Mapped[str | None] = mapped_column(String(150))
    # Migration 0006: drawn at its first review for a second reviewer's blind review.
    # Server-side defaults only: an insert that does not name the column works on a database
    # at an older revision too (the feedback export reads such databases).
    second_review: Mapped[bool] = mapped_column(Boolean, server_default=false())


class Feedback(Base):
    """The correct code of a prediction, given by a reviewer."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    prdtypecode: Mapped[int] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Review console (migration 0004): the code in force before this correction, and when
    # its author undid it (an undone correction no longer counts anywhere).
    previous_code: Mapped[int | None] = mapped_column(Integer)
    undone_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Migration 0006: "review" (a first review or a correction), "second" (the blind second
    # review of a drawn prediction), "settle" (an admin's decision on a disagreement).
    kind: Mapped[str] = mapped_column(String(16), server_default="review")


class DriftRun(Base):
    """One `monitor drift` run: its verdict, per-column scores and where its reports are."""

    __tablename__ = "drift_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime())
    window_end: Mapped[datetime] = mapped_column(UtcDateTime())
    current_rows: Mapped[int] = mapped_column(Integer)
    reference_rows: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(64))
    model_uri: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(64))
    dataset_drift: Mapped[bool] = mapped_column(Boolean)
    drift_share: Mapped[float] = mapped_column(Float)
    drifted_columns: Mapped[list[str]] = mapped_column(JSON)
    column_scores: Mapped[dict[str, float]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    report_html: Mapped[str | None] = mapped_column(Text)
    report_json: Mapped[str | None] = mapped_column(Text)


class User(Base):
    """A user of the service: a role, an argon2 password hash, and whether it may log in."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Raised by a password or role change, a disable and "sign out everywhere": access
    # tokens carry the version they were issued at and are refused once it moved on.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiKey(Base):
    """A machine client's key: only its prefix (lookup) and SHA-256 are stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
