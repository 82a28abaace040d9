"""Batch prediction of an X-layout CSV with a real (tiny) classifier.

One `ProductClassifier` is trained once per module on generated products (`factories`,
seconds); every test then predicts CSV files written in tmp_path with real JPEGs, a
missing image, a corrupt image and rows with empty text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from factories import COLORS, VOCABULARY, make_products, tiny_model_params, write_jpeg
from rakuten_mlops.cli import app
from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.inference.batch import (
    NOTE_COLUMN,
    NOTE_DESIGNATION_FROM_DESCRIPTION,
    NOTE_NO_INPUT,
    predict_csv,
)
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.schema import OUTPUT_COLUMNS, image_filename


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ProductClassifier:
    image_dir = tmp_path_factory.mktemp("train-images")
    train = make_products(30, seed=1, image_dir=image_dir)
    val = make_products(10, seed=2, image_dir=image_dir)
    return ProductClassifier(tiny_model_params(epochs=1), seed=42).fit(train, val, progress=False)


@pytest.fixture
def batch(tmp_path: Path) -> tuple[Path, Path]:
    """An X-layout CSV (unnamed, non-contiguous index) and its image folder."""
    images = tmp_path / "images"
    images.mkdir()
    write_jpeg(images / image_filename(501, 1), COLORS[2583], 0)  # row 40: usable image
    (images / image_filename(503, 3)).write_bytes(b"\xff\xd8 not really a jpeg")  # row 7: corrupt
    # row 12: its image is missing from the folder.
    x = pd.DataFrame(
        {
            "designation": [
                "piscine gonflable pompe",
                "roman livre poche auteur",
                "housse couette drap",
                "carte pokemon",
                "",
                None,
                "oreiller coton rideau",
            ],
            "description": [
                "chlore spa",
                "",
                None,
                "booster",
                "chien chat collier",
                None,
                "",
            ],
            "productid": [1, 2, 3, 4, 5, 6, None],
            "imageid": [501, 502, 503, 504, 505, 506, None],
        },
        index=[40, 12, 7, 3000, 5, 99, 1],
    )
    csv_path = tmp_path / "X_batch.csv"
    x.to_csv(csv_path)
    return csv_path, images


def read_output(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0, keep_default_na=False, na_values=[""])


def test_every_row_gets_one_prediction_with_index_preserved(
    classifier: ProductClassifier, batch: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = batch
    out = tmp_path / "out" / "preds.csv"
    summary = predict_csv(
        classifier.predict, csv_path, out, images_dir=images, chunk_size=3, progress=False
    )
    result = read_output(out)
    source = pd.read_csv(csv_path, index_col=0)
    assert summary.rows == len(source) == len(result)
    assert summary.chunks == 3
    assert result.index.tolist() == source.index.tolist()
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith(",prdtypecode,")
    assert list(result.columns) == [*OUTPUT_COLUMNS, NOTE_COLUMN]
    # Only the row whose image exists and decodes used it.
    assert result["has_image"].tolist() == [True, False, False, False, False, False, False]
    assert summary.with_image == 1
    # Clear titles land in their class; rows without a title are kept, with a note.
    assert result.loc[40, "prdtypecode"] == 2583
    assert result.loc[12, "prdtypecode"] == 10
    assert result.loc[7, "prdtypecode"] == 1920
    assert result.loc[5, NOTE_COLUMN] == NOTE_DESIGNATION_FROM_DESCRIPTION
    assert result.loc[5, "prdtypecode"] == 2220  # predicted from its description
    assert result.loc[99, NOTE_COLUMN] == NOTE_NO_INPUT
    assert result["confidence"].between(0, 1).all()
    assert (result["top_1_proba"] >= result["top_2_proba"]).all()
    assert set(result["prdtypecode"]) <= set(VOCABULARY)
    assert not list(out.parent.glob(".*.part"))


def test_chunk_size_does_not_change_predictions(
    classifier: ProductClassifier, batch: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = batch
    calls: list[int] = []

    def spy(frame: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(frame))
        return classifier.predict(frame)

    small = predict_csv(
        spy, csv_path, tmp_path / "small.csv", images_dir=images, chunk_size=2, progress=False
    )
    assert max(calls) <= 2  # memory holds one chunk at a time
    predict_csv(
        classifier.predict,
        csv_path,
        tmp_path / "one.csv",
        images_dir=images,
        chunk_size=100,
        progress=False,
    )
    chunked, whole = read_output(small.output), read_output(tmp_path / "one.csv")
    pd.testing.assert_index_equal(chunked.index, whole.index)
    for column in (
        "prdtypecode",
        "top_1_code",
        "top_2_code",
        "top_3_code",
        "has_image",
        NOTE_COLUMN,
    ):
        assert chunked[column].tolist() == whole[column].tolist()
    # Other batch shapes round differently (BLAS kernels): same codes, close probabilities.
    np.testing.assert_allclose(chunked["confidence"], whole["confidence"], rtol=0, atol=1e-5)


def test_named_index_keeps_its_name_and_text_only_without_images(
    classifier: ProductClassifier, tmp_path: Path
) -> None:
    x = pd.DataFrame({"designation": ["piscine pompe", "roman auteur"], "description": ["", ""]})
    x.index = pd.Index([8, 9], name="product_index")
    csv_path = tmp_path / "x.csv"
    x.to_csv(csv_path)
    predict_csv(classifier.predict, csv_path, tmp_path / "p.csv", progress=False)
    header = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("product_index,prdtypecode,")
    assert read_output(tmp_path / "p.csv")["prdtypecode"].tolist() == [2583, 10]


@pytest.mark.parametrize(
    ("columns", "images", "missing"),
    [
        pytest.param(
            ["description", "productid", "imageid"], False, "designation", id="no-designation"
        ),
        pytest.param(
            ["designation", "description", "productid"],
            True,
            "imageid",
            id="no-imageid-with-images",
        ),
    ],
)
def test_missing_required_column_names_file_and_column(
    classifier: ProductClassifier, tmp_path: Path, columns: list[str], images: bool, missing: str
) -> None:
    values = {"designation": ["x"], "description": ["y"], "productid": [1], "imageid": [2]}
    csv_path = tmp_path / "bad.csv"
    pd.DataFrame({c: values[c] for c in columns}).to_csv(csv_path)
    with pytest.raises(DataError, match=rf"bad\.csv: missing required column `{missing}`"):
        predict_csv(
            classifier.predict,
            csv_path,
            tmp_path / "p.csv",
            images_dir=tmp_path if images else None,
            progress=False,
        )
    assert not (tmp_path / "p.csv").exists()


def test_failure_midway_leaves_previous_output_untouched(
    classifier: ProductClassifier, batch: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, images = batch
    out = tmp_path / "preds.csv"
    out.write_text("previous results\n", encoding="utf-8")
    calls = 0

    def flaky(frame: pd.DataFrame) -> pd.DataFrame:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("out of memory")
        return classifier.predict(frame)

    with pytest.raises(ModelError, match=r"data rows 3-4: RuntimeError: out of memory"):
        predict_csv(flaky, csv_path, out, images_dir=images, chunk_size=2, progress=False)
    assert out.read_text(encoding="utf-8") == "previous results\n"
    assert not list(tmp_path.glob(".*.part"))


def test_header_only_input_gives_header_only_output(
    classifier: ProductClassifier, tmp_path: Path
) -> None:
    csv_path = tmp_path / "empty.csv"
    csv_path.write_text(",designation,description,productid,imageid\n", encoding="utf-8")
    summary = predict_csv(classifier.predict, csv_path, tmp_path / "p.csv", progress=False)
    assert summary.rows == 0
    assert read_output(tmp_path / "p.csv").empty


def test_predict_command_with_a_saved_pyfunc_model(
    classifier: ProductClassifier, batch: tuple[Path, Path], tmp_path: Path
) -> None:
    from rakuten_mlops.models.pyfunc import save_pyfunc_model

    csv_path, images = batch
    model_dir = save_pyfunc_model(
        classifier, tmp_path / "model", pd.DataFrame({"designation": ["piscine"]})
    )
    out = tmp_path / "preds.csv"
    runner = CliRunner()
    args = ["predict", "--model", str(model_dir), "--input", str(csv_path), "--output", str(out)]
    result = runner.invoke(
        app, [*args, "--images", str(images), "--chunk-size", "4", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 7 predictions" in result.output
    predictions = read_output(out)
    direct = classifier.predict(
        pd.DataFrame({"designation": ["piscine gonflable pompe"], "description": ["chlore spa"]})
    )
    assert predictions.index.tolist() == [40, 12, 7, 3000, 5, 99, 1]
    assert predictions.loc[40, "prdtypecode"] == direct["prdtypecode"].iloc[0] == 2583
    assert predictions.loc[40, "has_image"]

    missing = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(tmp_path / "nope.csv"),
            "--output",
            str(out),
        ],
    )
    assert missing.exit_code == 1
    assert "input file not found" in missing.output
    assert "Traceback" not in missing.output


@pytest.fixture(scope="module")
def pyfunc_dir(classifier: ProductClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's classifier saved as an MLflow pyfunc model directory."""
    from rakuten_mlops.models.pyfunc import save_pyfunc_model

    return save_pyfunc_model(
        classifier,
        tmp_path_factory.mktemp("pyfunc") / "model",
        pd.DataFrame({"designation": ["piscine"]}),
    )


def test_header_only_input_through_the_pyfunc_model_gives_an_empty_output(
    pyfunc_dir: Path, tmp_path: Path
) -> None:
    csv_path = tmp_path / "empty.csv"
    csv_path.write_text(",designation,description,productid,imageid\n", encoding="utf-8")
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(pyfunc_dir), "--input", str(csv_path), "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 0 predictions" in result.output
    assert "schema" not in result.output.lower()
    output = read_output(out)
    assert output.empty
    assert list(output.columns) == [*OUTPUT_COLUMNS, NOTE_COLUMN]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "input file not found"),
        (b"designation;description\nfoo;bar\n", "missing required column `designation`"),
        (b"\xff\xfe\x00\x81\x92binary\x00\x00", "not a readable CSV file"),
        (b"", "not a readable CSV file"),
    ],
    ids=["missing", "no-designation-column", "binary", "empty-file"],
)
def test_input_errors_are_reported_before_the_model_loads(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    csv_path = tmp_path / "input.csv"
    if content is not None:
        csv_path.write_bytes(content)
    # The model does not exist: had it been loaded first, the error would be about it.
    args = ["predict", "--model", str(tmp_path / "no-model"), "--input", str(csv_path)]
    result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "p.csv")])
    assert result.exit_code == 1
    assert expected in result.output
    assert "MLmodel" not in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "p.csv").exists()


def test_output_equal_to_input_is_refused_and_the_input_kept(
    batch: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, _ = batch
    before = csv_path.read_bytes()
    (tmp_path / "sub").mkdir()
    for output in (csv_path, tmp_path / "sub" / ".." / csv_path.name):
        args = ["predict", "--model", str(tmp_path / "no-model"), "--input", str(csv_path)]
        result = CliRunner().invoke(app, [*args, "--output", str(output)])
        assert result.exit_code == 1
        assert "is the input file" in result.output
        assert csv_path.read_bytes() == before
    link = tmp_path / "link.csv"
    link.symlink_to(csv_path)
    with pytest.raises(DataError, match="is the input file"):
        predict_csv(lambda frame: frame, csv_path, link, progress=False)
    assert csv_path.read_bytes() == before


def test_sigterm_during_prediction_removes_the_part_file(
    classifier: ProductClassifier, batch: tuple[Path, Path], tmp_path: Path
) -> None:
    import os
    import signal

    csv_path, images = batch
    out = tmp_path / "preds.csv"
    out.write_text("previous results\n", encoding="utf-8")
    seen_part = []

    def killed_on_second_chunk(frame: pd.DataFrame) -> pd.DataFrame:
        seen_part.append((tmp_path / ".preds.csv.part").exists())
        if len(seen_part) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return classifier.predict(frame)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        predict_csv(
            killed_on_second_chunk, csv_path, out, images_dir=images, chunk_size=2, progress=False
        )
    assert stopped.value.code == 128 + signal.SIGTERM
    assert seen_part == [True, True]  # it was there while predicting
    assert not list(tmp_path.glob(".*.part"))
    assert out.read_text(encoding="utf-8") == "previous results\n"
    # The handler is put back afterwards.
    assert signal.getsignal(signal.SIGTERM) == previous
