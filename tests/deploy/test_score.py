"""`score --engine local|spark` on the real shared sample with a small trained model.

The reference is the single-process batch `predict` (`inference.batch.predict_csv`): both
engines must give the same code for every row and the same probabilities (CPU-robust
tolerance). Spark runs on `local[2]` with one session for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.inference.batch import NOTE_COLUMN, NOTE_NO_INPUT, predict_csv
from rakuten_mlops.models.pyfunc import PredictFn, as_predict_fn, load_pyfunc_model
from rakuten_mlops.schema import IMAGE_TRAIN_DIR, OUTPUT_COLUMNS, X_TRAIN_FILE
from rakuten_mlops.scoring.catalogue import ERROR_COLUMN, INDEX_COLUMN, SCORE_COLUMNS
from rakuten_mlops.scoring.local import score_local
from rakuten_mlops.scoring.spark import build_spark_session, score_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROBA_TOL = 1e-6
PROBA_COLUMNS = ["confidence", "top_1_proba", "top_2_proba", "top_3_proba"]
CODE_COLUMNS = ["prdtypecode", "top_1_code", "top_2_code", "top_3_code"]


def read_scores(output: Path) -> pd.DataFrame:
    """Every output row of a scoring job (either engine), sorted by `index`."""
    files = sorted(Path(output).glob("*.parquet"))
    if not files:
        raise DataError(f"{output}: no Parquet part file")
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.sort_values(INDEX_COLUMN, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = build_spark_session("local[2]", app_name="rakuten-score-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def predict_fn(sample_model_dir: Path) -> PredictFn:
    return as_predict_fn(load_pyfunc_model(sample_model_dir))


@pytest.fixture(scope="module")
def reference(
    predict_fn: PredictFn, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    """Single-process `predict` of the whole sample, index as column `index`."""
    out = tmp_path_factory.mktemp("reference") / "predictions.csv"
    predict_csv(
        predict_fn,
        sample_dir / X_TRAIN_FILE,
        out,
        images_dir=sample_dir / IMAGE_TRAIN_DIR,
        progress=False,
    )
    frame = pd.read_csv(out, index_col=0, keep_default_na=False)
    return frame.rename_axis("index").reset_index().sort_values("index").reset_index(drop=True)


def assert_same_predictions(scores: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == len(reference)
    np.testing.assert_array_equal(scores["index"].to_numpy(), reference["index"].to_numpy())
    for column in CODE_COLUMNS:
        np.testing.assert_array_equal(scores[column].to_numpy(), reference[column].to_numpy())
    for column in PROBA_COLUMNS:
        np.testing.assert_allclose(
            scores[column].to_numpy(), reference[column].to_numpy(), atol=PROBA_TOL, rtol=0
        )
    assert (scores["has_image"].to_numpy() == reference["has_image"].to_numpy()).all()
    assert (scores["category"] == reference["category"]).all()
    assert (scores[NOTE_COLUMN].fillna("") == reference[NOTE_COLUMN]).all()
    assert (scores[ERROR_COLUMN] == "").all()


@pytest.mark.slow
def test_spark_scores_equal_single_process_predict_row_for_row(
    spark: SparkSession,
    sample_model_dir: Path,
    sample_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    summary = score_spark(
        sample_model_dir,
        [sample_dir / X_TRAIN_FILE],
        tmp_path / "spark",
        images_dir=sample_dir / IMAGE_TRAIN_DIR,
        spark=spark,
    )
    scores = read_scores(tmp_path / "spark")
    assert summary.rows == len(reference) > 20_000 - 100
    assert summary.failed == 0
    assert summary.with_image == int(reference["has_image"].sum()) > 800
    assert (tmp_path / "spark" / "_SUCCESS").is_file()
    assert len(list((tmp_path / "spark").glob("*.parquet"))) >= 2  # both cores had a partition
    assert_same_predictions(scores, reference)


@pytest.mark.slow
def test_local_engine_equals_predict_and_keeps_the_input_order(
    predict_fn: PredictFn, sample_dir: Path, reference: pd.DataFrame, tmp_path: Path
) -> None:
    # The first 4,000 sample rows (the whole sample is scored by Spark above), as Parquet.
    head = pd.read_csv(sample_dir / X_TRAIN_FILE, index_col=0, nrows=4000, dtype=str)
    head.rename_axis("index").reset_index().to_parquet(tmp_path / "head.parquet")
    summary = score_local(
        predict_fn,
        [tmp_path / "head.parquet"],
        tmp_path / "local",
        images_dir=sample_dir / IMAGE_TRAIN_DIR,
        chunk_size=1500,
        progress=False,
    )
    written = pd.read_parquet(tmp_path / "local" / "part-00000.parquet")
    np.testing.assert_array_equal(written["index"].to_numpy(), head.index.astype("int64"))
    assert summary.rows == 4000
    expected = reference.set_index("index").loc[head.index.astype("int64")].reset_index()
    assert_same_predictions(read_scores(tmp_path / "local"), expected.sort_values("index"))


def write_messy_catalogue(folder: Path, images: Path, sample_dir: Path) -> tuple[Path, Path]:
    """A CSV and a Parquet file with bad rows, and an image folder with one real image."""
    sample = pd.read_csv(sample_dir / X_TRAIN_FILE, index_col=0, nrows=400)
    with_image = next(
        (i, p)
        for i, p in zip(sample["imageid"], sample["productid"], strict=True)
        if (sample_dir / IMAGE_TRAIN_DIR / f"image_{i}_product_{p}.jpg").is_file()
    )
    images.mkdir()
    name = f"image_{with_image[0]}_product_{with_image[1]}.jpg"
    (images / name).write_bytes((sample_dir / IMAGE_TRAIN_DIR / name).read_bytes())
    csv_path = folder / "inbox-1.csv"
    csv_path.write_text(
        ",designation,description,productid,imageid\n"
        f'7,"Piscine tubulaire 3m, pompe",Bâche incluse,{with_image[1]},{with_image[0]}\n'
        "8,Roman policier poche,,123,456\n"  # image missing from the folder
        '9,"",Housse de couette 240x220,abc,not-an-id\n'  # no title, ids not numbers
        "10,,,,\n"  # nothing at all
        "11,Carte Pokemon,desc,1,2,an extra field\n"  # malformed line: dropped
        'x12,"Jeu ""PS4"" neuf",,3,4\n',  # index not an integer: kept, index null
        encoding="utf-8",
    )
    parquet_path = folder / "inbox-2.parquet"
    pd.DataFrame(
        {"designation": ["Lot de 3 croquettes chien", None], "description": [None, "Laisse"]},
        index=pd.Index([20, 21], name="index"),
    ).reset_index().to_parquet(parquet_path)
    return csv_path, parquet_path


@pytest.mark.slow
def test_bad_rows_and_missing_images_do_not_fail_either_engine(
    spark: SparkSession,
    sample_model_dir: Path,
    predict_fn: PredictFn,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    csv_path, parquet_path = write_messy_catalogue(tmp_path, tmp_path / "images", sample_dir)
    local = score_local(
        predict_fn,
        [csv_path, parquet_path],
        tmp_path / "local",
        images_dir=tmp_path / "images",
        progress=False,
    )
    on_spark = score_spark(
        sample_model_dir,
        [csv_path, parquet_path],
        tmp_path / "spark",
        images_dir=tmp_path / "images",
        spark=spark,
    )
    a, b = read_scores(tmp_path / "local"), read_scores(tmp_path / "spark")
    assert local.rows == on_spark.rows == 7  # 8 rows, the malformed line dropped
    assert local.with_image == on_spark.with_image == 1
    assert local.failed == on_spark.failed == 0
    for scores in (a, b):
        assert scores["index"].tolist()[:-1] == [7, 8, 9, 10, 20, 21]
        assert pd.isna(scores["index"].iloc[-1])  # "x12"
        assert scores["prdtypecode"].notna().all()
        by_index = scores.set_index(scores["index"].astype("float"))
        assert bool(by_index.loc[7.0, "has_image"]) is True
        assert bool(by_index.loc[8.0, "has_image"]) is False
        assert by_index.loc[10.0, NOTE_COLUMN] == NOTE_NO_INPUT
    np.testing.assert_array_equal(a["prdtypecode"], b["prdtypecode"])
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=PROBA_TOL, rtol=0)


def test_a_row_the_model_fails_on_gets_an_error_and_the_others_are_scored(
    predict_fn: PredictFn, tmp_path: Path
) -> None:
    calls: list[int] = []

    def fragile(frame: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(frame))
        if frame["designation"].str.contains("BOOM").any():
            raise RuntimeError("the model cannot read this row")
        return predict_fn(frame)

    x = tmp_path / "x.csv"
    titles = [f"roman policier tome {i}" for i in range(16)]
    titles[5] = "BOOM"
    pd.DataFrame({"designation": titles}, index=range(100, 116)).to_csv(x)
    summary = score_local(fragile, [x], tmp_path / "out", chunk_size=16, progress=False)
    scores = read_scores(tmp_path / "out")
    assert summary.rows == 16 and summary.failed == 1
    failed = scores[scores[ERROR_COLUMN] != ""]
    assert failed["index"].tolist() == [105]
    assert (
        "data rows" in failed[ERROR_COLUMN].iloc[0]
        and "RuntimeError" in failed[ERROR_COLUMN].iloc[0]
    )
    assert failed[list(OUTPUT_COLUMNS)].isna().all(axis=None)
    assert scores.drop(index=failed.index)["prdtypecode"].notna().all()
    assert len(calls) <= 1 + 2 * 4 + 1  # bisection, not one call per row


def test_output_folder_is_not_mixed_with_a_previous_job(
    predict_fn: PredictFn, tmp_path: Path
) -> None:
    x = tmp_path / "x.csv"
    pd.DataFrame({"designation": ["roman"]}, index=[1]).to_csv(x)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").write_bytes(b"old")
    with pytest.raises(DataError, match="not empty"):
        score_local(predict_fn, [x], tmp_path / "out", progress=False)
    score_local(predict_fn, [x], tmp_path / "out", overwrite=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_SUCCESS",
        "part-00000.parquet",
    ]


def test_cli_score_local_with_a_glob_and_clear_errors(
    sample_model_dir: Path, tmp_path: Path
) -> None:
    for i in range(2):
        pd.DataFrame(
            {"designation": ["piscine gonflable", "roman"]}, index=[10 * i, 10 * i + 1]
        ).to_csv(tmp_path / f"part-{i}.csv")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "score",
            "--model",
            str(sample_model_dir),
            "--input",
            str(tmp_path / "part-*.csv"),
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "scored 4 rows" in result.output
    assert read_scores(tmp_path / "out")["index"].tolist() == [0, 1, 10, 11]

    missing = runner.invoke(
        app,
        [
            "score",
            "--model",
            str(sample_model_dir),
            "--input",
            str(tmp_path / "nope-*.csv"),
            "--output",
            str(tmp_path / "o2"),
        ],
    )
    assert missing.exit_code != 0 and "no CSV or Parquet file found" in missing.output
    (tmp_path / "bad.csv").write_text(",title\n1,x\n", encoding="utf-8")
    no_column = runner.invoke(
        app,
        [
            "score",
            "--model",
            str(sample_model_dir),
            "--input",
            str(tmp_path / "bad.csv"),
            "--output",
            str(tmp_path / "o3"),
        ],
    )
    assert no_column.exit_code != 0 and "missing required column `designation`" in no_column.output
    no_model = runner.invoke(
        app,
        [
            "score",
            "--engine",
            "spark",
            "--model",
            str(tmp_path),
            "--input",
            str(tmp_path / "bad.csv"),
            "--output",
            str(tmp_path / "o4"),
        ],
    )
    assert no_model.exit_code != 0 and "MLmodel file not found" in no_model.output


def test_spark_engine_refuses_a_missing_model_before_starting_spark(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="MLmodel"):
        score_spark(tmp_path, [tmp_path / "x.csv"], tmp_path / "out")
