"""`data validate`: pandera schema, alignment, labels, text quality and image coverage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from rakuten_mlops import schema
from rakuten_mlops.cli import app
from rakuten_mlops.data.validate import (
    ValidationResult,
    load_labelled_products,
    load_text_origin,
    validate_raw,
)
from rakuten_mlops.errors import DataError
from rakuten_mlops.features.images import image_path_for, is_decodable

X_FILE, Y_FILE = schema.X_TRAIN_FILE, schema.Y_TRAIN_FILE
CODES = (10, 1560, 2583)
N_ROWS = 30


def make_jpeg(color: str = "red", size: int = 24) -> bytes:
    """A real JPEG written by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def product_frames(n: int = N_ROWS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """X and Y of `n` distinct products, three classes, every other one with a description."""
    x = pd.DataFrame(
        {
            "designation": [f"Produit numéro {i} modèle {i * 7}" for i in range(n)],
            "description": [f"Description {i}" if i % 2 == 0 else None for i in range(n)],
            "productid": [1000 + i for i in range(n)],
            "imageid": [5000 + i for i in range(n)],
        }
    )
    y = pd.DataFrame({"prdtypecode": [CODES[i % len(CODES)] for i in range(n)]})
    return x, y


def write_raw(
    root: Path,
    x: pd.DataFrame,
    y: pd.DataFrame,
    *,
    images: int = 3,
    corrupt: int = 1,
) -> Path:
    """Write the official layout: CSVs as the challenge ships them, real (and corrupt) JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    x.to_csv(root / X_FILE)
    y.to_csv(root / Y_FILE)
    images_dir = root / schema.IMAGE_TRAIN_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    if not images + corrupt:
        return root
    rows = list(zip(x["imageid"], x["productid"], strict=True))
    for imageid, productid in rows[:images]:
        image_path_for(images_dir, imageid, productid).write_bytes(make_jpeg())
    for imageid, productid in rows[images : images + corrupt]:
        image_path_for(images_dir, imageid, productid).write_bytes(make_jpeg()[:200])
    return root


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    x, y = product_frames()
    return write_raw(tmp_path / "raw", x, y)


def run_validate(raw_dir: Path, tmp_path: Path) -> ValidationResult:
    return validate_raw(raw_dir, tmp_path / "reports" / "validation.json")


# --- images ----------------------------------------------------------------------------------


def test_image_path_for_uses_the_official_name(tmp_path: Path) -> None:
    assert image_path_for(tmp_path, 1263597046, 3804725264) == (
        tmp_path / "image_1263597046_product_3804725264.jpg"
    )


def test_is_decodable_accepts_real_images(tmp_path: Path) -> None:
    jpeg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    jpeg.write_bytes(make_jpeg())
    Image.new("RGB", (8, 8), "blue").save(png)
    assert is_decodable(jpeg)
    assert is_decodable(jpeg, full=True)
    assert is_decodable(png)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("truncated.jpg", make_jpeg(size=64)[:300]),
        ("header_only.jpg", make_jpeg(size=64)[:120]),
        ("garbage.jpg", b"this is not an image" * 20),
        ("empty.jpg", b""),
    ],
)
def test_is_decodable_rejects_broken_files(tmp_path: Path, name: str, payload: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    assert not is_decodable(path)
    assert not is_decodable(path, full=True)


def test_is_decodable_never_raises_on_missing_paths(tmp_path: Path) -> None:
    assert not is_decodable(tmp_path / "missing.jpg")
    assert not is_decodable(tmp_path)


# --- valid data ------------------------------------------------------------------------------


def test_valid_data_passes_with_stats_and_warnings(raw: Path, tmp_path: Path) -> None:
    result = run_validate(raw, tmp_path)

    assert result.ok, result.errors
    stats = result.stats
    assert stats["products"] == N_ROWS
    assert stats["classes"] == len(CODES)
    assert stats["class_counts"] == {str(code): N_ROWS // len(CODES) for code in CODES}
    assert stats["images"] == 3
    assert stats["image_files_found"] == 4
    assert stats["image_files_undecodable"] == 1
    assert stats["missing_descriptions"] == N_ROWS // 2
    assert stats["duplicate_text_rows"] == 0
    joined = "\n".join(result.warnings)
    assert f"{N_ROWS - 4} of {N_ROWS} products have no image file" in joined
    assert "1 image files do not decode (rows 3)" in joined
    assert f"column 'description': {N_ROWS // 2} rows (50.0%) have no description" in joined


def test_report_is_written_as_json(raw: Path, tmp_path: Path) -> None:
    result = run_validate(raw, tmp_path)

    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report == json.loads(json.dumps(result.to_dict()))
    assert report["ok"] is True
    assert report["stats"]["products"] == N_ROWS


def test_summary_is_readable(raw: Path, tmp_path: Path) -> None:
    summary = run_validate(raw, tmp_path).summary()
    assert f"raw data {raw}: OK" in summary
    assert f"products: {N_ROWS} (3 classes)" in summary
    assert "images:   3 decodable" in summary
    assert "warning: " in summary


def test_text_origin_is_checked_when_present(raw: Path, tmp_path: Path) -> None:
    pd.DataFrame({"index": [0, 1, 99], "origin": ["full", "prefix_100", "full"]}).to_csv(
        raw / schema.TEXT_ORIGIN_FILE, index=False
    )
    result = run_validate(raw, tmp_path)

    assert result.ok
    assert result.stats["text_origin"] == {"full": 2, "prefix_100": 1}
    joined = "\n".join(result.warnings)
    assert "text_origin.csv: column 'index': 1 rows are not products" in joined
    assert f"{N_ROWS - 2} products have no origin" in joined
    origin = load_text_origin(raw)
    assert origin is not None
    assert origin.loc[1] == "prefix_100"


# --- errors: the data is unusable ------------------------------------------------------------


def test_label_outside_the_known_codes_is_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    y.loc[5, "prdtypecode"] = 999
    y.loc[17, "prdtypecode"] = 12
    raw = write_raw(tmp_path / "raw", x, y)

    result = run_validate(raw, tmp_path)

    assert not result.ok
    assert result.errors == [
        "Y_train_CVw08PX.csv: column 'prdtypecode': 2 rows with a code outside the 27 known "
        "codes (rows 5, 17: 999, 12)"
    ]


@pytest.mark.parametrize("column", ["designation", "productid", "imageid"])
def test_missing_x_column_is_an_error(tmp_path: Path, column: str) -> None:
    x, y = product_frames()
    raw = write_raw(tmp_path / "raw", x.drop(columns=[column]), y, images=0, corrupt=0)

    result = run_validate(raw, tmp_path)

    assert not result.ok
    assert f"{X_FILE}: missing column '{column}'" in result.errors


def test_missing_label_column_is_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    raw = write_raw(tmp_path / "raw", x, y.rename(columns={"prdtypecode": "label"}))

    result = run_validate(raw, tmp_path)

    assert f"{Y_FILE}: missing column 'prdtypecode'" in result.errors


def test_non_integer_ids_are_errors_naming_rows_and_values(tmp_path: Path) -> None:
    x, y = product_frames()
    x["productid"] = x["productid"].astype(object)
    x.loc[2, "productid"] = "abc"
    x.loc[4, "productid"] = "12.5"
    x["imageid"] = x["imageid"].astype(object)
    x.loc[7, "imageid"] = None
    raw = write_raw(tmp_path / "raw", x, y, images=0, corrupt=0)

    result = run_validate(raw, tmp_path)

    assert not result.ok
    assert (
        f"{X_FILE}: column 'productid': 2 rows with a value that is not an integer "
        "(rows 2, 4: 'abc', '12.5')"
    ) in result.errors
    assert f"{X_FILE}: column 'imageid': 1 row with an empty value (rows 7)" in result.errors


def test_negative_id_is_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    x.loc[3, "imageid"] = -4
    raw = write_raw(tmp_path / "raw", x, y, images=0, corrupt=0)

    errors = run_validate(raw, tmp_path).errors

    assert errors == [f"{X_FILE}: column 'imageid': 1 row with a negative value (rows 3: -4)"]


def test_duplicated_index_is_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    x.index = [0, 1, 2, 2, *range(4, N_ROWS)]
    raw = write_raw(tmp_path / "raw", x, y)

    errors = run_validate(raw, tmp_path).errors

    assert f"{X_FILE}: index (first column): 2 rows with a duplicated value (values 2)" in errors


def test_misaligned_x_and_y_is_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    y = y.drop(index=[4, 9])
    y.loc[40] = 10
    raw = write_raw(tmp_path / "raw", x, y)

    errors = run_validate(raw, tmp_path).errors

    assert errors == [
        f"{X_FILE} and {Y_FILE}: index not aligned: 2 products of {X_FILE} have no label "
        f"(rows 4, 9); 1 labels have no product in {X_FILE} (rows 40)"
    ]


@pytest.mark.parametrize("missing", [X_FILE, Y_FILE])
def test_missing_file_is_an_error(raw: Path, tmp_path: Path, missing: str) -> None:
    (raw / missing).unlink()
    result = run_validate(raw, tmp_path)
    assert f"{missing}: file not found in {raw}" in result.errors
    assert (tmp_path / "reports" / "validation.json").is_file()


def test_missing_raw_directory_is_an_error_with_a_report(tmp_path: Path) -> None:
    result = run_validate(tmp_path / "nowhere", tmp_path)
    assert not result.ok
    assert result.errors == [f"raw directory not found: {tmp_path / 'nowhere'}"]
    assert json.loads((tmp_path / "reports" / "validation.json").read_text())["ok"] is False


def test_csv_without_its_index_column_is_an_error(raw: Path, tmp_path: Path) -> None:
    x, _ = product_frames()
    x.to_csv(raw / X_FILE, index=False)
    errors = run_validate(raw, tmp_path).errors
    assert errors == [
        f"{X_FILE}: the first column must be the product index, found 'designation' "
        "(file saved without its index?)"
    ]


def test_header_only_files_are_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    raw = write_raw(tmp_path / "raw", x.iloc[:0], y.iloc[:0], images=0, corrupt=0)

    assert run_validate(raw, tmp_path).errors == [f"{X_FILE}: no product rows"]
    with pytest.raises(DataError, match="no product rows"):
        load_labelled_products(raw)


def test_unreadable_csv_is_an_error(raw: Path, tmp_path: Path) -> None:
    (raw / Y_FILE).write_bytes(b"")
    errors = run_validate(raw, tmp_path).errors
    assert len(errors) == 1
    assert errors[0].startswith(f"{Y_FILE}: cannot be read as CSV")


def test_too_many_empty_designations_is_an_error(tmp_path: Path) -> None:
    x, y = product_frames()
    x.loc[[1, 2], "designation"] = ["", "<br> &nbsp;"]
    raw = write_raw(tmp_path / "raw", x, y)

    result = validate_raw(raw, tmp_path / "r.json", max_empty_designation_ratio=0.05)

    assert not result.ok
    assert result.errors == [
        f"{X_FILE}: column 'designation': 2 rows are empty after cleaning (6.67%; rows 1, 2), "
        "more than the 5.00% allowed"
    ]


def test_few_empty_designations_are_a_warning(tmp_path: Path) -> None:
    x, y = product_frames()
    x.loc[1, "designation"] = None
    raw = write_raw(tmp_path / "raw", x, y)

    result = validate_raw(raw, tmp_path / "r.json", max_empty_designation_ratio=0.05)

    assert result.ok
    assert result.stats["empty_designations"] == 1
    assert any("1 rows are empty after cleaning (3.33%; rows 1)" in w for w in result.warnings)


# --- warnings: real-data quality issues ------------------------------------------------------


def test_duplicates_are_warnings(tmp_path: Path) -> None:
    x, y = product_frames()
    # Same product text up to case and HTML entities; one pair with conflicting labels.
    x.loc[1, ["designation", "description"]] = ["Caf&eacute; NOIR", None]
    x.loc[2, ["designation", "description"]] = ["café noir", None]
    x.loc[6, "productid"] = 1000  # the productid of row 0
    raw = write_raw(tmp_path / "raw", x, y)

    result = run_validate(raw, tmp_path)

    assert result.ok, result.errors
    assert result.stats["duplicate_text_rows"] == 2
    assert result.stats["duplicate_text_groups"] == 1
    assert result.stats["conflicting_label_groups"] == 1  # rows 1 and 2 have codes 1560, 2583
    assert result.stats["duplicate_productid_rows"] == 2
    joined = "\n".join(result.warnings)
    assert "2 rows in 1 groups have the same normalised text, 1 of them with different labels" in (
        joined
    )
    assert "column 'productid': 2 rows share their productid with another row (rows 0, 6)" in (
        joined
    )


def test_missing_image_directory_is_a_warning(tmp_path: Path) -> None:
    x, y = product_frames()
    raw = tmp_path / "raw"
    raw.mkdir()
    x.to_csv(raw / X_FILE)
    y.to_csv(raw / Y_FILE)

    result = run_validate(raw, tmp_path)

    assert result.ok
    assert result.stats["images"] == 0
    assert any("every product is text-only" in w for w in result.warnings)


def test_load_labelled_products_joins_typed_frames(raw: Path) -> None:
    products = load_labelled_products(raw)
    assert len(products) == N_ROWS
    assert products.index.dtype == "int64"
    assert products["productid"].dtype == "int64"
    assert products[schema.TARGET_COL].dtype == "int64"
    assert products.loc[3, schema.TARGET_COL] == CODES[0]


def test_load_labelled_products_raises_the_validation_messages(tmp_path: Path) -> None:
    x, y = product_frames()
    y.loc[5, "prdtypecode"] = 999
    raw = write_raw(tmp_path / "raw", x, y)
    with pytest.raises(DataError, match=r"Y_train_CVw08PX.csv: column 'prdtypecode'.*rows 5: 999"):
        load_labelled_products(raw)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_validate_passes_on_valid_data(raw: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["data", "validate", "--raw-dir", str(raw), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert f"products: {N_ROWS} (3 classes)" in result.output
    assert json.loads(report.read_text())["ok"] is True


def test_cli_validate_exits_non_zero_on_unknown_label(tmp_path: Path) -> None:
    x, y = product_frames()
    y.loc[8, "prdtypecode"] = 1234
    raw = write_raw(tmp_path / "raw", x, y)
    result = CliRunner().invoke(
        app, ["data", "validate", "--raw-dir", str(raw), "--report", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 1
    assert (
        "error: Y_train_CVw08PX.csv: column 'prdtypecode': 1 row with a code outside the 27 "
        "known codes (rows 8: 1234)"
    ) in result.output
    assert "Traceback" not in result.output
