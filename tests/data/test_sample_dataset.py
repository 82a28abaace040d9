"""Expectations on the real shared sample: schema, labels, nulls, duplicates, leakage.

The sample (20,066 labelled products, 902 images) lives outside the repository, in
`../shared/data/rakuten-sample`; it is read from there, never copied into the repo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rakuten_mlops import schema
from rakuten_mlops.cli import app
from rakuten_mlops.data.validate import dedup_keys, load_labelled_products, load_text_origin
from rakuten_mlops.features.images import is_decodable
from rakuten_mlops.features.text import clean_text
from rakuten_mlops.params import load_params

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO.parent / "shared/data/rakuten-sample"
N_PRODUCTS = 20_066
N_IMAGES = 902
TEXT_ORIGINS = {"full", "prefix_100", "prefix_200", "designation_full_description_cut"}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def products() -> pd.DataFrame:
    assert SAMPLE.is_dir(), f"the shared sample is missing: {SAMPLE}"
    return load_labelled_products(SAMPLE)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample imported into a raw layer through the real CLI."""
    dest = tmp_path_factory.mktemp("sample") / "raw"
    code, output = invoke("data", "import", "--source", str(SAMPLE), "--dest", str(dest))
    assert code == 0, output
    return dest


# --- the data itself -------------------------------------------------------------------------


def test_schema_and_size(products: pd.DataFrame) -> None:
    assert len(products) == N_PRODUCTS
    assert products.index.is_unique
    assert products.index.min() >= 0
    for column in ("productid", "imageid", schema.TARGET_COL):
        assert products[column].dtype == "int64"
    assert products["productid"].is_unique
    assert products["imageid"].is_unique


def test_label_set_is_the_27_codes_with_no_tiny_class(products: pd.DataFrame) -> None:
    counts = products[schema.TARGET_COL].value_counts()
    assert set(counts.index) == set(schema.PRODUCT_CODES)
    # README: the smallest classes hold ~1% each, the largest is 2583.
    assert counts.min() / N_PRODUCTS > 0.008
    assert counts.idxmax() == 2583


def test_nulls(products: pd.DataFrame) -> None:
    designation = products["designation"].map(clean_text)
    assert designation.ne("").all()
    assert designation.str.len().median() > 20
    # Most sample rows lost their description (prefix rows, see README); not all of them.
    missing = products["description"].map(clean_text).eq("").mean()
    assert 0.5 < missing < 0.9


def test_duplicate_texts_are_rare(products: pd.DataFrame) -> None:
    keys = dedup_keys(products)
    duplicated = keys.duplicated(keep=False)
    assert duplicated.mean() < 0.02
    labels_per_key = products.loc[duplicated, schema.TARGET_COL].groupby(keys[duplicated]).nunique()
    assert (labels_per_key > 1).sum() <= 5


def test_text_origin_covers_every_product() -> None:
    origin = load_text_origin(SAMPLE)
    assert origin is not None
    assert len(origin) == N_PRODUCTS
    assert set(origin.unique()) == TEXT_ORIGINS


def test_every_sample_image_belongs_to_a_product_and_decodes(products: pd.DataFrame) -> None:
    images = sorted((SAMPLE / schema.IMAGE_TRAIN_DIR).iterdir())
    expected = {
        schema.image_filename(i, p)
        for i, p in zip(products["imageid"], products["productid"], strict=True)
    }
    assert len(images) == N_IMAGES
    assert {p.name for p in images} <= expected
    assert all(is_decodable(p) for p in images)


# --- the pipeline stages on it ---------------------------------------------------------------


def test_import_and_validate_report_the_sample(raw: Path, tmp_path: Path) -> None:
    report = tmp_path / "validation.json"
    code, output = invoke("data", "validate", "--raw-dir", str(raw), "--report", str(report))

    assert code == 0, output
    assert f"raw data {raw}: OK" in output
    assert f"products: {N_PRODUCTS:,} (27 classes)" in output
    assert f"images:   {N_IMAGES} decodable" in output
    stats = json.loads(report.read_text())["stats"]
    assert stats["products"] == N_PRODUCTS
    assert stats["classes"] == 27
    assert stats["images"] == N_IMAGES
    assert stats["image_files_undecodable"] == 0
    assert (raw / schema.MANIFEST_FILE).is_file()


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (
            lambda x, y: (x.drop(columns=["imageid"]), y),
            "error: X_train_update.csv: missing column 'imageid'",
        ),
        (
            lambda x, y: (x, y.assign(prdtypecode=y["prdtypecode"].mask(y.index == 7, 999))),
            "error: Y_train_CVw08PX.csv: column 'prdtypecode': 1 row with a code outside "
            "the 27 known codes (rows 7: 999)",
        ),
    ],
    ids=["missing-column", "unknown-label"],
)
def test_validate_fails_on_a_corrupted_copy(tmp_path: Path, corrupt: object, expected: str) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    x = pd.read_csv(SAMPLE / schema.X_TRAIN_FILE, index_col=0)
    y = pd.read_csv(SAMPLE / schema.Y_TRAIN_FILE, index_col=0)
    assert callable(corrupt)
    x, y = corrupt(x, y)
    x.to_csv(raw / schema.X_TRAIN_FILE)
    y.to_csv(raw / schema.Y_TRAIN_FILE)

    code, output = invoke(
        "data", "validate", "--raw-dir", str(raw), "--report", str(tmp_path / "r.json")
    )

    assert code == 1
    assert expected in output


@pytest.mark.slow
def test_prepare_is_reproducible_stratified_and_leak_free(raw: Path, tmp_path: Path) -> None:
    params_file = REPO / "params.yaml"
    fractions = load_params(params_file)["data"]
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        args = ["--raw-dir", str(raw), "--out-dir", str(out), "--params", str(params_file)]
        code, output = invoke("data", "prepare", *args)
        assert code == 0, output
    for name in schema.SPLITS:
        first = (outs[0] / "splits" / f"{name}.txt").read_text()
        assert first == (outs[1] / "splits" / f"{name}.txt").read_text()

    frames = {name: pd.read_parquet(outs[0] / f"{name}.parquet") for name in schema.SPLITS}
    everything = pd.concat(frames.values())
    assert len(everything) == N_PRODUCTS
    assert everything[schema.INDEX_COL].is_unique
    assert int(everything["has_image"].sum()) == N_IMAGES

    # Leakage: no normalised text in two splits.
    keys = dedup_keys(load_labelled_products(raw))
    split_count = (
        pd.concat(
            [
                keys.loc[frame[schema.INDEX_COL]].to_frame("key").assign(split=name)
                for name, frame in frames.items()
            ]
        )
        .groupby("key")["split"]
        .nunique()
    )
    assert (split_count == 1).all()

    # Sizes follow params.yaml, every split holds every class in the overall proportions.
    overall = everything[schema.TARGET_COL].value_counts(normalize=True)
    for name, frame in frames.items():
        target = fractions[f"{name}_size"] if name != "train" else None
        if target is not None:
            assert abs(len(frame) / N_PRODUCTS - target) < 0.005, name
        share = frame[schema.TARGET_COL].value_counts(normalize=True)
        assert set(share.index) == set(schema.PRODUCT_CODES), name
        assert (share - overall).abs().max() < 0.01, name

    shutil.rmtree(outs[1])
