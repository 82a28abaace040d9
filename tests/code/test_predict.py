"""Batch prediction of an X-layout CSV with a real (tiny) classifier.

One `ProductClassifier` is trained once per module on generated products (seconds); every
test then predicts CSV files written in tmp_path with real JPEGs, a missing image, a
corrupt image and rows with empty text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.data.schema import OUTPUT_COLUMNS, image_filename
from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.modeling.predict import (
    NOTE_COLUMN,
    NOTE_DESIGNATION_FROM_DESCRIPTION,
    NOTE_NO_INPUT,
    predict_csv,
)
from rakuten_mlops.models.pipeline import ProductClassifier

# Four classes with their own vocabulary and image colour.
VOCABULARY = {
    10: ["roman", "livre", "poche", "auteur", "chapitre", "edition"],
    1560: ["table", "chaise", "armoire", "commode", "bois", "meuble"],
    2583: ["piscine", "filtre", "pompe", "bache", "chlore", "spa"],
    2522: ["stylo", "cahier", "agenda", "classeur", "papier", "bureau"],
}
COLORS = {10: (200, 30, 30), 1560: (30, 200, 30), 2583: (30, 30, 200), 2522: (220, 220, 30)}
TINY_PARAMS = {
    "sparse": {"svc_c": 0.5},
    "text_nn": {
        "embedding_dim": 8,
        "hidden_dim": 8,
        "hash_buckets": 1024,
        "epochs": 2,
        "batch_size": 32,
        "min_count": 1,
    },
    "image": {
        "image_size": 16,
        "channels": [4, 8],
        "epochs": 1,
        "batch_size": 16,
        "cache_dir": "",
    },
}


def write_jpeg(path: Path, color: tuple[int, int, int], seed: int) -> Path:
    """A real, slightly noisy JPEG of one colour."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-20, 20, (24, 24, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG")
    return path


def make_products(n_per_class: int, seed: int, image_dir: Path) -> pd.DataFrame:
    """Labelled products (processed layout) with an image for every third one."""
    rng = np.random.default_rng(seed)
    rows = []
    for code, words in VOCABULARY.items():
        for i in range(n_per_class):
            title = " ".join(rng.choice(words, size=3)) + f" ref {rng.integers(1000)}"
            description = " ".join(rng.choice(words, size=5)) if i % 2 else ""
            path = ""
            if i % 3 == 0:
                path = str(write_jpeg(image_dir / f"{code}_{seed}_{i}.jpg", COLORS[code], i))
            rows.append(
                {
                    "designation": title,
                    "description": description,
                    "image_path": path,
                    "has_image": bool(path),
                    "prdtypecode": code,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ProductClassifier:
    image_dir = tmp_path_factory.mktemp("train-images")
    train = make_products(30, seed=1, image_dir=image_dir)
    val = make_products(10, seed=2, image_dir=image_dir)
    return ProductClassifier(TINY_PARAMS, seed=42).fit(train, val, progress=False)


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
                "piscine filtre pompe",
                "roman livre poche auteur",
                "table chaise bois",
                "stylo cahier",
                "",
                None,
                "agenda classeur papier",
            ],
            "description": [
                "chlore spa",
                "",
                None,
                "bureau",
                "armoire commode meuble",
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
    assert result.loc[7, "prdtypecode"] == 1560
    assert result.loc[5, NOTE_COLUMN] == NOTE_DESIGNATION_FROM_DESCRIPTION
    assert result.loc[5, "prdtypecode"] == 1560  # predicted from its description
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
    np.testing.assert_allclose(chunked["confidence"], whole["confidence"], rtol=1e-6)


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
        pd.DataFrame({"designation": ["piscine filtre pompe"], "description": ["chlore spa"]})
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
