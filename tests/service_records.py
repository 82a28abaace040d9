"""A service database with prediction and feedback records, for the continuous-training tests.

The tables follow the service contract (`predictions`, `feedback`, and the security
issue's `users` with `username` / `role`). They are declared here with SQLAlchemy Core so
these tests exercise the export against the column names, whatever migration level the
service code is at. Importable as `service_records` (pytest `pythonpath = ["tests"]`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

_metadata = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions",
    _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("productid", sa.BigInteger),
    sa.Column("imageid", sa.BigInteger),
    sa.Column("designation", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("has_image", sa.Boolean, nullable=False, default=False),
    sa.Column("image_sha256", sa.String(64)),
    sa.Column("image_path", sa.Text),
    sa.Column("model_name", sa.String(200)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("model_alias", sa.String(32)),
    sa.Column("variant", sa.String(16)),
    sa.Column("shadow", sa.Boolean, default=False),
    sa.Column("prdtypecode", sa.Integer, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("top3", sa.JSON),
    sa.Column("needs_review", sa.Boolean, default=False),
    sa.Column("latency_ms", sa.Float),
    sa.Column("username", sa.String(100)),
)
FEEDBACK = sa.Table(
    "feedback",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), index=True),
    sa.Column("prdtypecode", sa.Integer, nullable=False),
    sa.Column("username", sa.String(100)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
USERS = sa.Table(
    "users",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(100), unique=True, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
)


class ServiceRecords:
    """Writes predictions and feedback the way the service does."""

    def __init__(self, path: Path, *, with_users: bool = False) -> None:
        self.url = f"sqlite:///{path}"
        self.engine = sa.create_engine(self.url)
        tables = [PREDICTIONS, FEEDBACK] + ([USERS] if with_users else [])
        _metadata.create_all(self.engine, tables=tables)
        self._clock = datetime(2026, 11, 1, tzinfo=UTC)

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add_user(self, username: str, role: str) -> None:
        """A user of the security issue's `users` table."""
        with self.engine.begin() as conn:
            conn.execute(USERS.insert().values(username=username, role=role))

    def add_prediction(self, product: Mapping[str, Any], code: int = 10, **extra: Any) -> str:
        """Record a prediction of `product` (designation, description, productid, ...)."""
        prediction_id = uuid.uuid4().hex
        row = {
            "id": prediction_id,
            "created_at": self._tick(),
            "designation": product["designation"],
            "description": product.get("description") or None,
            "productid": product.get("productid"),
            "imageid": product.get("imageid"),
            "image_path": product.get("image_path") or None,
            "has_image": bool(product.get("image_path")),
            "model_name": "rakuten-product-classifier",
            "model_version": "1",
            "model_alias": "champion",
            "variant": "champion",
            "shadow": False,
            "prdtypecode": code,
            "confidence": 0.5,
            "top3": [],
            "needs_review": True,
            "latency_ms": 3.0,
            "username": "anonymous",
            **extra,
        }
        with self.engine.begin() as conn:
            conn.execute(PREDICTIONS.insert().values(**row))
        return prediction_id

    def add_feedback(self, prediction_id: str, code: int, username: str = "anonymous") -> int:
        """Record a reviewer's correction; returns the feedback id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                FEEDBACK.insert().values(
                    prediction_id=prediction_id,
                    prdtypecode=code,
                    username=username,
                    created_at=self._tick(),
                )
            )
            return int(result.inserted_primary_key[0])

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()
