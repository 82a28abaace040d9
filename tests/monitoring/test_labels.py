"""Which feedback labels a prediction for the online quality (latest, not undone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import select, update

from rakuten_mlops.db import crud_monitoring
from rakuten_mlops.db.models import Feedback
from rakuten_mlops.db.session import make_engine, make_session_factory


def test_an_undone_correction_no_longer_labels_its_prediction(
    database_url: str, store_predictions: object
) -> None:
    products = pd.DataFrame(
        {
            "designation": ["Piscine tubulaire", "Roman de poche"],
            "description": ["", ""],
            "has_image": [False, False],
            "prdtypecode": [2583, 10],
            "true_code": [2583, 2705],
        }
    )
    ids = store_predictions(products)  # type: ignore[operator]
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    start, end = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC)
    try:
        with factory() as session:
            labelled = crud_monitoring.labelled_predictions(session, start, end)
            assert labelled.set_index("prediction_id")["true_code"].to_dict() == {
                ids[0]: 2583,
                ids[1]: 2705,
            }
            undone = session.scalar(select(Feedback.id).where(Feedback.prediction_id == ids[1]))
            session.execute(
                update(Feedback).where(Feedback.id == undone).values(undone_at=datetime.now(UTC))
            )
            session.commit()
        with factory() as session:
            labelled = crud_monitoring.labelled_predictions(session, start, end)
            codes = labelled.set_index("prediction_id")["true_code"]
            assert codes[ids[0]] == 2583
            assert pd.isna(codes[ids[1]])
            only = crud_monitoring.labelled_predictions(session, start, end, labelled_only=True)
            assert list(only["prediction_id"]) == [ids[0]]
    finally:
        engine.dispose()
