"""`data import`: local copy in the official layout -> immutable raw layer + manifest."""

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
from rakuten_mlops.data.ingest import import_dataset
from rakuten_mlops.data.manifest import Manifest, sha256_file
from rakuten_mlops.errors import DataError

IMAGES = {
    "image_11_product_101.jpg": "red",
    "image_12_product_102.jpg": "green",
    "image_13_product_103.jpg": "blue",
}


def make_jpeg(color: str, size: int = 24) -> bytes:
    """A real JPEG written by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small local copy in the official layout, optional files included."""
    root = tmp_path / "source"
    images = root / schema.IMAGE_TRAIN_DIR
    images.mkdir(parents=True)
    x = pd.DataFrame(
        {
            "designation": ["Chaise en bois", "Peluche", "Livre"],
            "description": ["", "Douce", ""],
            "productid": [101, 102, 103],
            "imageid": [11, 12, 13],
        }
    )
    x.to_csv(root / schema.X_TRAIN_FILE)
    pd.DataFrame({"prdtypecode": [1560, 1280, 10]}).to_csv(root / schema.Y_TRAIN_FILE)
    pd.DataFrame({"index": [0, 1, 2], "origin": ["full"] * 3}).to_csv(
        root / schema.TEXT_ORIGIN_FILE, index=False
    )
    for name, color in IMAGES.items():
        (images / name).write_bytes(make_jpeg(color))
    return root


def test_import_copies_files_and_writes_manifest(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"

    manifest = import_dataset(source, dest)

    for name in (schema.X_TRAIN_FILE, schema.Y_TRAIN_FILE, schema.TEXT_ORIGIN_FILE):
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    for name in IMAGES:
        rel = schema.IMAGE_TRAIN_DIR / name
        assert (dest / rel).read_bytes() == (source / rel).read_bytes()
    assert manifest.source == str(source.resolve())
    assert [f.path for f in manifest.files] == [
        schema.X_TRAIN_FILE,
        schema.Y_TRAIN_FILE,
        schema.TEXT_ORIGIN_FILE,
    ]
    for entry in manifest.files:
        assert entry.sha256 == sha256_file(dest / entry.path)
        assert entry.size == (dest / entry.path).stat().st_size
    # The directory entry must be exactly what Manifest.add_directory computes (same digest).
    expected_dir = Manifest(source="x").add_directory(dest, dest / schema.IMAGE_TRAIN_DIR)
    assert manifest.directories == [expected_dir]
    assert expected_dir.files == len(IMAGES)
    assert Manifest.read(dest).files == manifest.files
    assert not list(dest.rglob("*.part")), "temporary files left behind"


def test_import_twice_copies_nothing_and_keeps_the_manifest(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    first = import_dataset(source, dest)
    manifest_bytes = (dest / schema.MANIFEST_FILE).read_bytes()
    image = dest / schema.IMAGE_TRAIN_DIR / "image_11_product_101.jpg"
    csv = dest / schema.X_TRAIN_FILE
    inodes = {image: image.stat().st_ino, csv: csv.stat().st_ino}

    second = import_dataset(source, dest)

    assert second == first
    assert (dest / schema.MANIFEST_FILE).read_bytes() == manifest_bytes
    # A copy would have renamed a new file into place (new inode).
    assert {p: p.stat().st_ino for p in inodes} == inodes


def test_import_adds_new_images_and_updates_the_manifest(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    first = import_dataset(source, dest)
    new_image = source / schema.IMAGE_TRAIN_DIR / "image_14_product_104.jpg"
    new_image.write_bytes(make_jpeg("yellow"))

    second = import_dataset(source, dest)

    assert (dest / schema.IMAGE_TRAIN_DIR / new_image.name).read_bytes() == new_image.read_bytes()
    assert second.directories[0].files == len(IMAGES) + 1
    assert second.directories[0].sha256 != first.directories[0].sha256
    assert Manifest.read(dest).directories == second.directories


def test_import_without_optional_files(tmp_path: Path, source: Path) -> None:
    minimal = tmp_path / "minimal"
    minimal.mkdir()
    for name in (schema.X_TRAIN_FILE, schema.Y_TRAIN_FILE):
        (minimal / name).write_bytes((source / name).read_bytes())

    manifest = import_dataset(minimal, tmp_path / "raw")

    assert [f.path for f in manifest.files] == [schema.X_TRAIN_FILE, schema.Y_TRAIN_FILE]
    assert manifest.directories == []


def test_import_refuses_a_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"source directory not found: .*nowhere"):
        import_dataset(missing, tmp_path / "raw")


@pytest.mark.parametrize("required", [schema.X_TRAIN_FILE, schema.Y_TRAIN_FILE])
def test_import_refuses_a_source_without_a_required_file(
    source: Path, tmp_path: Path, required: str
) -> None:
    (source / required).unlink()
    with pytest.raises(DataError, match=rf"required file missing.*{required}"):
        import_dataset(source, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_import_never_overwrites_a_different_raw_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    import_dataset(source, dest)
    original = (dest / schema.Y_TRAIN_FILE).read_bytes()
    (source / schema.Y_TRAIN_FILE).write_text(",prdtypecode\n0,10\n1,10\n2,10\n")

    with pytest.raises(DataError, match=rf"{schema.Y_TRAIN_FILE} already exists.*immutable"):
        import_dataset(source, dest)
    assert (dest / schema.Y_TRAIN_FILE).read_bytes() == original


def test_import_never_overwrites_a_different_image(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    import_dataset(source, dest)
    image = schema.IMAGE_TRAIN_DIR / "image_12_product_102.jpg"
    original = (dest / image).read_bytes()
    (source / image).write_bytes(make_jpeg("black", size=40))

    with pytest.raises(DataError, match=r"image_12_product_102.jpg already exists"):
        import_dataset(source, dest)
    assert (dest / image).read_bytes() == original


def test_import_detects_a_same_size_change_the_manifest_does_not_vouch_for(
    source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "raw"
    import_dataset(source, dest)
    image = source / schema.IMAGE_TRAIN_DIR / "image_13_product_103.jpg"
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF  # same size, different content
    image.write_bytes(bytes(data))

    with pytest.raises(DataError, match=r"image_13_product_103.jpg already exists"):
        import_dataset(source, dest)


def test_import_refuses_raw_images_that_the_source_lacks(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    import_dataset(source, dest)
    (dest / schema.IMAGE_TRAIN_DIR / "image_99_product_999.jpg").write_bytes(make_jpeg("white"))

    with pytest.raises(DataError, match=r"1 files that are not in .*image_99_product_999.jpg"):
        import_dataset(source, dest)


def test_import_refuses_the_same_directory(source: Path) -> None:
    with pytest.raises(DataError, match="same directory"):
        import_dataset(source, source)


def test_cli_import_prints_the_manifest(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    result = CliRunner().invoke(
        app, ["data", "import", "--source", str(source), "--dest", str(dest)]
    )

    assert result.exit_code == 0, result.output
    assert schema.X_TRAIN_FILE in result.output
    assert f"{len(IMAGES)} files" in result.output
    manifest = json.loads((dest / schema.MANIFEST_FILE).read_text())
    assert manifest["source"] == str(source.resolve())


def test_cli_import_reports_a_missing_required_file_without_traceback(
    source: Path, tmp_path: Path
) -> None:
    (source / schema.X_TRAIN_FILE).unlink()
    result = CliRunner().invoke(
        app, ["data", "import", "--source", str(source), "--dest", str(tmp_path / "raw")]
    )

    assert result.exit_code == 1
    assert "required file missing" in result.output
    assert schema.X_TRAIN_FILE in result.output
    assert "Traceback" not in result.output
