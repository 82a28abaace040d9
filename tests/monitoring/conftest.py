"""Fixtures of the monitoring tests: the real sample's processed layer, a tiny served model,
a migrated service database and a helper that stores prediction records in it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from factories import tiny_model_params, write_raw_dataset
from rakuten_mlops.data.ingest import import_dataset
from rakuten_mlops.data.prepare import load_split, prepare_dataset
from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.db.models import Feedback, Prediction
from rakuten_mlops.db.session import make_engine, make_session_factory

SPLIT_PARAMS = {"val_size": 0.15, "test_size": 0.15, "unseen_size": 0.1, "seed": 42}

StorePredictions = Callable[..., list[str]]


@pytest.fixture(scope="session")
def sample_processed(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real shared sample imported and prepared (train / val / test / unseen)."""
    root = tmp_path_factory.mktemp("sample-layers")
    import_dataset(sample_dir, root / "raw")
    prepare_dataset(root / "raw", root / "processed", SPLIT_PARAMS)
    return root / "processed"


@pytest.fixture(scope="session")
def sample_products(sample_processed: Path) -> pd.DataFrame:
    """Every product of the real sample (all splits), processed."""
    return pd.concat(
        [load_split(sample_processed, s) for s in ("train", "val", "test", "unseen")],
        ignore_index=True,
    )


@pytest.fixture(scope="session")
def tiny_served_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pyfunc model directory, its processed layer): generated products, tiny params."""
    from rakuten_mlops.models.pipeline import ProductClassifier
    from rakuten_mlops.models.pyfunc import save_pyfunc_model

    root = tmp_path_factory.mktemp("tiny-model")
    write_raw_dataset(root / "raw", n_per_class=40, seed=5)
    prepare_dataset(root / "raw", root / "processed", SPLIT_PARAMS)
    train, val = (load_split(root / "processed", s) for s in ("train", "val"))
    classifier = ProductClassifier(tiny_model_params(epochs=1), seed=1).fit(
        train, val, progress=False
    )
    save_pyfunc_model(
        classifier, root / "model", val[["designation", "description", "image_path"]].head(3)
    )
    return root / "model", root / "processed"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite service database."""
    url = f"sqlite:///{tmp_path}/service.db"
    upgrade_database(url)
    return url


@pytest.fixture
def store_predictions(database_url: str) -> StorePredictions:
    """`store(products, *, at, variant, version, labels, ...)` -> prediction ids.

    `products` has `designation`, `description`, `has_image`, `prdtypecode` (the predicted
    code) and optionally `confidence`, `true_code` (stored as feedback when not NaN),
    `request_id`, `shadow`, `top3` (default: the predicted code at `confidence`).
    """

    def store(
        products: pd.DataFrame,
        *,
        at: datetime | None = None,
        variant: str = "champion",
        version: str = "1",
        shadow: bool = False,
        seed: int = 0,
    ) -> list[str]:
        at = at or datetime.now(UTC) - timedelta(hours=1)
        rng = np.random.default_rng(seed)
        engine = make_engine(database_url)
        ids = []
        with make_session_factory(engine)() as session:
            for i, row in enumerate(products.to_dict("records")):
                pid = uuid.uuid4().hex
                ids.append(pid)
                confidence = row.get("confidence")
                if confidence is None or pd.isna(confidence):
                    confidence = float(rng.uniform(0.3, 1.0))
                session.add(
                    _prediction(
                        pid,
                        row,
                        at + timedelta(seconds=i),
                        variant,
                        version,
                        bool(row.get("shadow", shadow)),
                        float(confidence),
                    )
                )
                true_code = row.get("true_code")
                if true_code is not None and not pd.isna(true_code):
                    session.flush()
                    session.add(
                        Feedback(
                            prediction_id=pid,
                            prdtypecode=int(true_code),
                            username="reviewer",
                            created_at=at + timedelta(seconds=i),
                        )
                    )
            session.commit()
        engine.dispose()
        return ids

    return store


def _prediction(
    pid: str,
    row: dict[str, Any],
    at: datetime,
    variant: str,
    version: str,
    shadow: bool,
    confidence: float,
) -> Prediction:
    description = row.get("description")
    return Prediction(
        id=pid,
        created_at=at,
        request_id=str(row.get("request_id") or pid),
        productid=str(row.get("productid", "")),
        imageid=None,
        designation=str(row["designation"]),
        description=description if isinstance(description, str) and description else None,
        has_image=bool(row.get("has_image", False)),
        model_name="rakuten-product-classifier",
        model_version=version,
        model_alias="champion" if variant == "champion" else "challenger",
        variant=variant,
        shadow=shadow,
        prdtypecode=int(row["prdtypecode"]),
        confidence=confidence,
        top3=row["top3"]
        if isinstance(row.get("top3"), list)
        else [{"code": int(row["prdtypecode"]), "name": "", "probability": confidence}],
        needs_review=confidence < 0.5,
        latency_ms=5.0,
        username="client",
    )
