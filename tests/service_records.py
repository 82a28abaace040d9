"""A service database with prediction and feedback records, for the continuous-training tests.

The database is created by the service's own migrations (`rakuten-mlops db upgrade`) and
the rows are written with its ORM models, as the service writes them. The security
issue's `users` table (`username`, `role`) is added here with SQLAlchemy Core when the
migrations do not create it yet. Importable as `service_records` (pytest
`pythonpath = ["tests"]`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.db.models import Feedback, Prediction
from rakuten_mlops.db.session import make_engine, make_session_factory

_metadata = sa.MetaData()
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
        upgrade_database(self.url)
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine)
        if with_users and not sa.inspect(self.engine).has_table("users"):
            _metadata.create_all(self.engine, tables=[USERS])
        self._clock = datetime(2026, 11, 1, tzinfo=UTC)

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add_user(self, username: str, role: str) -> None:
        """A user of the security issue's `users` table."""
        users = sa.Table("users", sa.MetaData(), autoload_with=self.engine)
        with self.engine.begin() as conn:
            conn.execute(users.insert().values(username=username, role=role))

    def add_prediction(self, product: Mapping[str, Any], code: int = 10, **extra: Any) -> str:
        """Record a prediction of `product` (designation, description, productid, ...)."""
        ids = {
            name: str(int(product[name])) if product.get(name) is not None else None
            for name in ("productid", "imageid")
        }
        row = Prediction(
            created_at=self._tick(),
            designation=product["designation"],
            description=product.get("description") or None,
            **ids,
            image_path=product.get("image_path") or None,
            has_image=bool(product.get("image_path")),
            model_name="rakuten-product-classifier",
            model_version="1",
            model_alias="champion",
            variant="champion",
            shadow=False,
            prdtypecode=code,
            confidence=0.5,
            top3=[],
            needs_review=True,
            latency_ms=3.0,
            username="anonymous",
            **extra,
        )
        with self.sessions() as session:
            session.add(row)
            session.commit()
            return row.id

    def add_feedback(self, prediction_id: str, code: int, username: str = "anonymous") -> int:
        """Record a reviewer's correction; returns the feedback id."""
        row = Feedback(
            prediction_id=prediction_id,
            prdtypecode=code,
            username=username,
            created_at=self._tick(),
        )
        with self.sessions() as session:
            session.add(row)
            session.commit()
            return row.id

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()
