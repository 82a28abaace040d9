"""A service database with prediction and feedback records, for the continuous-training tests.

The database is created by the service's own migrations (`rakuten-mlops db upgrade`) and
the rows are written with its ORM models and security functions, as the service writes
them: feedback comes from a real user with the `reviewer` role (`REVIEWER`) unless a test
says otherwise, since the export trusts only reviewers and admins of the `users` table.
Importable as `service_records` (pytest `pythonpath = ["tests"]`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from rakuten_mlops.db import crud_monitoring
from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.db.models import Feedback, Prediction, new_prediction_id
from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.serving.auth import users

REVIEWER = "rita"  # the reviewer every record's feedback comes from by default
CLIENT = "catalogue"  # the client every prediction comes from by default


class ServiceRecords:
    """Writes predictions and feedback the way the service does."""

    def __init__(self, path: Path, *, revision: str = "head") -> None:
        """Migrate `path` to `revision`; at a revision with users, add `REVIEWER` and `CLIENT`.

        `revision="0001"` is a database from before the security migration (no users).
        """
        self.url = f"sqlite:///{path}"
        upgrade_database(self.url, revision)
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine)
        self._clock = datetime(2026, 11, 1, tzinfo=UTC)
        self.with_users = revision != "0001"
        if self.with_users:
            self.add_user(REVIEWER, "reviewer")
            self.add_user(CLIENT, "client")

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add_user(self, username: str, role: str) -> None:
        """A user with `role`, created as `rakuten-mlops users create` does."""
        with self.sessions() as session:
            users.create_user(session, username, f"{username} password", role)
            session.commit()

    def disable_user(self, username: str) -> None:
        """Disable a user, as `rakuten-mlops users disable` does."""
        with self.sessions() as session:
            users.set_user_disabled(session, username)
            session.commit()

    def add_prediction(self, product: Mapping[str, Any], code: int = 10, **extra: Any) -> str:
        """Record a prediction of `product` (designation, description, productid, ...)."""
        ids = {
            name: str(int(product[name])) if product.get(name) is not None else None
            for name in ("productid", "imageid")
        }
        values: dict[str, Any] = {
            "created_at": self._tick(),
            "designation": product["designation"],
            "description": product.get("description") or None,
            **ids,
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
            "username": CLIENT if self.with_users else "anonymous",
        }
        # A Core insert names only these columns (see `add_feedback`).
        row = {"id": new_prediction_id(), **values, **extra}
        with self.sessions() as session:
            session.execute(sa.insert(Prediction.__table__).values(**row))
            session.commit()
        return str(row["id"])

    def add_feedback(
        self, prediction_id: str, code: int, username: str | None = None, **extra: Any
    ) -> int:
        """Record a correction by `username` (default: `REVIEWER`); returns the feedback id.

        `extra`: more columns (e.g. `kind`, migration 0006).
        """
        # A Core insert names only these columns: it also works on a database migrated to an
        # older revision than the ORM model (columns added later are left out).
        statement = sa.insert(Feedback.__table__).values(
            prediction_id=prediction_id,
            prdtypecode=code,
            username=username or (REVIEWER if self.with_users else "anonymous"),
            created_at=self._tick(),
            **extra,
        )
        with self.sessions() as session:
            result = session.execute(statement)
            session.commit()
            return int(result.inserted_primary_key[0])

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()


def add_drift_run(
    session: Session,
    *,
    at: datetime,
    dataset_drift: bool,
    drift_share: float,
    drifted_columns: Sequence[str] = (),
    column_scores: Mapping[str, float] | None = None,
    summary: Mapping[str, Any] | None = None,
    current_rows: int = 400,
    window: timedelta = timedelta(days=1),
) -> None:
    """Record a drift run ending at `at`, as `monitor drift` does (the caller commits)."""
    crud_monitoring.add_drift_run(
        session,
        created_at=at,
        window_start=at - window,
        window_end=at,
        current_rows=current_rows,
        reference_rows=13000,
        reference="train",
        dataset_drift=dataset_drift,
        drift_share=drift_share,
        drifted_columns=list(drifted_columns),
        column_scores=dict(column_scores or {}),
        summary=dict(summary or {}),
    )
