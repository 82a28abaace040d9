"""Feedback export (service DB -> append-only labelled layer) and its merge by `data prepare`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from factories import make_products, write_raw_dataset
from rakuten_mlops.cli import app
from rakuten_mlops.data.feedback import list_batches, load_feedback_layer
from rakuten_mlops.data.feedback_export import UNTRUSTED, export_feedback
from rakuten_mlops.data.prepare import load_feedback_holdout, load_split, prepare_dataset
from rakuten_mlops.data.validate import load_labelled_products
from rakuten_mlops.errors import DataError
from rakuten_mlops.params import FeedbackParams, ParamsError, parse_section
from rakuten_mlops.schema import IMAGE_TRAIN_DIR, X_TRAIN_FILE, Y_TRAIN_FILE
from service_records import REVIEWER, ServiceRecords


@pytest.fixture
def records(tmp_path: Path) -> Iterator[ServiceRecords]:
    db = ServiceRecords(tmp_path / "service.db")
    yield db
    db.close()


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Products as the service stored them (an image copy for every other one)."""
    store = tmp_path_factory.mktemp("image-store")
    return make_products(12, seed=7, image_dir=store, label_noise=0.0)


def test_export_writes_official_layout_latest_correction_wins(
    records: ServiceRecords, reviewed: pd.DataFrame, tmp_path: Path
) -> None:
    first, second = reviewed.iloc[0], reviewed.iloc[1]
    p1 = records.add_prediction(first.to_dict(), code=2583)
    records.add_feedback(p1, 1160)
    records.add_feedback(p1, 1920)  # the reviewer changed their mind: this one wins
    p2 = records.add_prediction(second.to_dict(), code=10)
    records.add_feedback(p2, 2220)
    again = records.add_prediction(second.to_dict(), code=10)  # same product, later
    records.add_feedback(again, 2583)
    no_id = records.add_prediction({"designation": "Tente de camping 4 places"}, code=10)
    records.add_feedback(no_id, 2583)
    bad = records.add_prediction({"designation": "x"}, code=10)
    records.add_feedback(bad, 9999)

    result = export_feedback(records.url, tmp_path / "feedback")

    assert result.batch is not None and result.rows == 3
    assert result.dropped["code outside the 27 classes"] == 1
    assert result.dropped["older correction of the same product"] == 2
    assert result.dropped[UNTRUSTED] == 0  # every correction above is the reviewer's
    assert "reviewer or admin" in result.role_filter
    products = load_labelled_products(result.batch)  # the raw layer's own reader accepts it
    codes = dict(zip(products["productid"], products["prdtypecode"], strict=True))
    assert codes[int(first["productid"])] == 1920
    assert codes[int(second["productid"])] == 2583
    assert sorted(codes.values()) == [1920, 2583, 2583]
    assert products.index.min() >= 1_000_000_000  # never collides with official indexes
    copied = list((result.batch / IMAGE_TRAIN_DIR).iterdir())
    assert len(copied) == 1 and copied[0].name == Path(first["image_path"]).name
    manifest = json.loads((result.batch / "manifest.json").read_text())
    assert manifest["last_feedback_id"] == 6 and manifest["products"] == 3
    assert set(manifest["files"]) == {X_TRAIN_FILE, Y_TRAIN_FILE}


def test_export_is_append_only_and_idempotent(
    records: ServiceRecords, reviewed: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "feedback"
    for _, product in reviewed.iloc[:3].iterrows():
        records.add_feedback(records.add_prediction(product.to_dict()), int(product.prdtypecode))
    first = export_feedback(records.url, out)
    assert first.batch is not None
    before = {p: p.read_bytes() for p in first.batch.rglob("*") if p.is_file()}

    nothing = export_feedback(records.url, out)
    assert nothing.batch is None and "no new reviewed feedback after feedback id 3" in nothing.note
    assert len(list_batches(out)) == 1

    # A later correction of an already exported product goes into a NEW batch and wins.
    product = reviewed.iloc[0]
    records.add_feedback(records.add_prediction(product.to_dict()), 2220)
    second = export_feedback(records.url, out)
    assert second.batch is not None and second.rows == 1
    assert [p.name for p in list_batches(out)] == [first.batch.name, second.batch.name]
    assert {p: p.read_bytes() for p in first.batch.rglob("*") if p.is_file()} == before
    layer = load_feedback_layer(out)
    assert len(layer) == 3
    latest = layer.set_index("productid").loc[int(product["productid"])]
    assert latest["prdtypecode"] == 2220 and latest["batch"] == second.batch.name


def test_a_recreated_database_is_exported_from_its_first_feedback(
    records: ServiceRecords, reviewed: pd.DataFrame, tmp_path: Path
) -> None:
    """Feedback ids restart at 1 in a new database: its rows are not taken for the old
    database's, already exported (nothing accepted is lost)."""
    out = tmp_path / "feedback"
    for _, product in reviewed.iloc[:4].iterrows():
        records.add_feedback(records.add_prediction(product.to_dict()), int(product.prdtypecode))
    assert export_feedback(records.url, out).last_feedback_id == 4
    fresh = ServiceRecords(tmp_path / "recreated.db")
    try:
        for _, product in reviewed.iloc[4:6].iterrows():
            fresh.add_feedback(fresh.add_prediction(product.to_dict()), int(product.prdtypecode))
        second = export_feedback(fresh.url, out)
        assert second.batch is not None and second.rows == 2 and second.last_feedback_id == 2
        assert export_feedback(fresh.url, out).batch is None  # and then only what is new
    finally:
        fresh.close()
    assert len(load_feedback_layer(out)) == 6
    manifests = [json.loads((b / "manifest.json").read_text()) for b in list_batches(out)]
    assert len({m["source"] for m in manifests}) == 2


def test_export_trusts_only_reviewers_and_admins_of_the_users_table(
    records: ServiceRecords, reviewed: pd.DataFrame, tmp_path: Path
) -> None:
    records.add_user("ada", "admin")
    records.add_user("carl", "client")
    records.add_user("vera", "reviewer")
    authors = [REVIEWER, "ada", "carl", "ghost", "vera"]  # ghost: no such user
    for i, who in enumerate(authors):
        product = reviewed.iloc[i]
        records.add_feedback(
            records.add_prediction(product.to_dict()), int(product.prdtypecode), who
        )
    # Vera leaves after her correction: it was valid when made, so it is still exported.
    records.disable_user("vera")

    result = export_feedback(records.url, tmp_path / "feedback")

    assert result.rows == 3 and result.read == 5
    assert result.dropped[UNTRUSTED] == 2  # the client's and the unknown username's
    assert "reviewer or admin" in result.role_filter and "unknown" in result.role_filter
    exported = set(load_labelled_products(result.batch)["productid"])  # type: ignore[arg-type]
    assert exported == {int(reviewed.iloc[i].productid) for i in (0, 1, 4)}
    manifest = json.loads((result.batch / "manifest.json").read_text())  # type: ignore[operator]
    assert manifest["dropped"][UNTRUSTED] == 2 and manifest["last_feedback_id"] == 5
    assert f"dropped 2: {UNTRUSTED}" in result.summary()


def test_export_before_the_security_migration_accepts_every_row(
    reviewed: pd.DataFrame, tmp_path: Path
) -> None:
    db = ServiceRecords(tmp_path / "old.db", revision="0001")  # no `users` table yet
    try:
        for i in range(2):
            product = reviewed.iloc[i]
            db.add_feedback(db.add_prediction(product.to_dict()), int(product.prdtypecode))
        result = export_feedback(db.url, tmp_path / "feedback")
    finally:
        db.close()
    assert result.rows == 2 and result.dropped[UNTRUSTED] == 0
    assert "every feedback row is accepted" in result.role_filter


def test_export_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="service database not found"):
        export_feedback(f"sqlite:///{tmp_path}/missing.db", tmp_path / "fb")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/other.db")
    with engine.begin() as conn:
        conn.execute(sa.text("create table unrelated (id integer)"))
    engine.dispose()
    with pytest.raises(DataError, match="no feedback, predictions table"):
        export_feedback(f"sqlite:///{tmp_path}/other.db", tmp_path / "fb")
    result = CliRunner().invoke(
        app,
        [
            "feedback",
            "export",
            "--database-url",
            f"sqlite:///{tmp_path}/missing.db",
            "--out-dir",
            str(tmp_path / "fb"),
        ],
    )
    assert result.exit_code == 1
    assert "service database not found" in result.output and "Traceback" not in result.output


def test_feedback_params_are_validated() -> None:
    def parse(values: object) -> FeedbackParams:
        return parse_section(FeedbackParams, values, "data.feedback")

    assert parse(None) == FeedbackParams()
    assert not FeedbackParams().enabled  # a `data:` section without it prepares as before
    with pytest.raises(ParamsError, match=r"unknown key.*`data\.feedback`: max_shar"):
        parse({"max_shar": 0.2})
    with pytest.raises(ParamsError, match=r"`data.feedback.max_share` must be < 1.0, got 1.5"):
        parse({"max_share": 1.5})
    with pytest.raises(ParamsError, match=r"`data\.feedback\.min_labels` must be an integer"):
        parse({"min_labels": "ten"})


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raw_dataset(tmp_path_factory.mktemp("raw"), n_per_class=40, seed=0)


def _export_products(records: ServiceRecords, products: pd.DataFrame, out: Path) -> Path:
    for _, product in products.iterrows():
        records.add_feedback(records.add_prediction(product.to_dict()), int(product.prdtypecode))
    result = export_feedback(records.url, out)
    assert result.batch is not None
    return result.batch


def test_prepare_merges_feedback_into_train_only(
    raw_dir: Path, records: ServiceRecords, tmp_path: Path
) -> None:
    params = {"val_size": 0.15, "test_size": 0.15, "unseen_size": 0.1, "seed": 3}
    plain = tmp_path / "plain"
    prepare_dataset(raw_dir, plain, {**params, "feedback": {"enabled": False}})

    # 30 new products, plus one that is in the test split (must never reach train).
    new = make_products(6, seed=9, image_dir=tmp_path, label_noise=0.0)
    test_row = load_split(plain, "test").iloc[0].to_dict()
    leaked = {**test_row, "prdtypecode": 10, "image_path": ""}
    feedback_products = pd.concat([new, pd.DataFrame([leaked])], ignore_index=True)
    feedback_dir = tmp_path / "feedback"
    _export_products(records, feedback_products, feedback_dir)

    merged_dir = tmp_path / "merged"
    feedback_params = {"enabled": True, "min_labels": 5, "max_share": 0.5, "holdout_share": 0.2}
    result = prepare_dataset(
        raw_dir, merged_dir, {**params, "feedback": feedback_params}, feedback_dir=feedback_dir
    )
    report = result.feedback
    assert report is not None
    assert report.dropped["also in the val or test split"] == 1
    assert report.merged + report.holdout == 30 and 0 < report.holdout < 15
    for split in ("val", "test", "unseen"):
        assert (merged_dir / f"{split}.parquet").read_bytes() == (
            plain / f"{split}.parquet"
        ).read_bytes(), split
    train = load_split(merged_dir, "train")
    plain_train = load_split(plain, "train")
    assert len(train) == len(plain_train) + report.merged
    from_feedback = train[train["text_origin"] == "feedback"]
    assert len(from_feedback) == report.merged
    assert not set(from_feedback["designation"]) & set(load_split(plain, "test")["designation"])
    with_image = from_feedback[from_feedback["has_image"]]
    assert len(with_image) > 0 and all(Path(p).is_file() for p in with_image["image_path"])
    holdout = load_feedback_holdout(merged_dir)
    assert len(holdout) == report.holdout
    assert not set(holdout["index"]) & set(train["index"])
    moved = {c["code"]: c for c in report.class_balance}
    assert sum(c["after"] for c in moved.values()) == len(train)
    metadata = json.loads((merged_dir / "metadata.json").read_text())
    assert metadata["feedback"]["batches"] == report.batches and len(report.batches) == 1
    assert json.loads((merged_dir / "feedback_report.json").read_text())["merged"] == report.merged


def test_prepare_guard_rails_min_labels_and_cap(
    raw_dir: Path, records: ServiceRecords, tmp_path: Path
) -> None:
    params = {"val_size": 0.15, "test_size": 0.15, "unseen_size": 0.0, "seed": 3}
    feedback_dir = tmp_path / "feedback"
    _export_products(
        records, make_products(8, seed=11, image_dir=tmp_path, label_noise=0.0), feedback_dir
    )
    too_few = prepare_dataset(
        raw_dir,
        tmp_path / "a",
        {**params, "feedback": {"enabled": True, "min_labels": 100, "holdout_share": 0.0}},
        feedback_dir=feedback_dir,
    ).feedback
    assert too_few is not None and too_few.merged == 0 and "min_labels" in too_few.note

    capped = prepare_dataset(
        raw_dir,
        tmp_path / "b",
        {
            **params,
            "feedback": {"enabled": True, "min_labels": 1, "max_share": 0.05, "holdout_share": 0.0},
        },
        feedback_dir=feedback_dir,
    ).feedback
    assert capped is not None and 0 < capped.merged < 40
    assert capped.feedback_share <= 0.05 + 1e-9
    assert capped.dropped["over the 5% cap (oldest first)"] == 40 - capped.merged


def test_prepare_cli_prints_the_class_balance_move(
    raw_dir: Path, records: ServiceRecords, tmp_path: Path
) -> None:
    feedback_dir = tmp_path / "feedback"
    surge = make_products(10, seed=12, image_dir=tmp_path, label_noise=0.0)
    surge = surge[surge["prdtypecode"] == 2583]
    _export_products(records, surge, feedback_dir)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        "data:\n  val_size: 0.15\n  test_size: 0.15\n  seed: 1\n"
        "  feedback:\n    enabled: true\n    min_labels: 1\n    holdout_share: 0.0\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "data",
            "prepare",
            "--raw-dir",
            str(raw_dir),
            "--out-dir",
            str(tmp_path / "p"),
            "--params",
            str(params_file),
            "--feedback-dir",
            str(feedback_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "10 reviewed product(s) merged into train" in result.output
    assert "2583 +" in result.output  # the surging class gains share
