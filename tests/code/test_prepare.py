"""`data prepare`: cleaned text, resolved images, deterministic leakage-free splits."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from rakuten_mlops import schema
from rakuten_mlops.cli import app
from rakuten_mlops.data.ingest import import_dataset
from rakuten_mlops.data.manifest import sha256_file
from rakuten_mlops.data.prepare import (
    assign_splits,
    load_split,
    prepare_dataset,
)
from rakuten_mlops.errors import DataError
from rakuten_mlops.features.images import image_path_for
from rakuten_mlops.features.text import normalize_for_dedup
from rakuten_mlops.params import DataParams, ParamsError, load_params, parse_section

CODES = (10, 1280, 1560, 2583)
PER_CLASS = 40
PARAMS = {"val_size": 0.15, "test_size": 0.15, "unseen_size": 0.1, "seed": 7}
WITH_IMAGE = (0, 1, 2, 3, 4, 5)
CORRUPT_IMAGE = 6


def make_jpeg(color: str = "red", size: int = 24) -> bytes:
    """A real JPEG written by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def product_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Products of 4 classes; every 5th row repeats the previous one's text in another spelling."""
    designations: list[str] = []
    descriptions: list[str | None] = []
    labels: list[int] = []
    for i in range(len(CODES) * PER_CLASS):
        code = CODES[i % len(CODES)]
        if i % 5 == 4:
            # Same class, same text up to case, accents, HTML and punctuation: a duplicate.
            j = i - len(CODES)
            designations.append(f"  ARTICLE  N°{j} ETE {code}! ")
            descriptions.append(f"details {j}" if j % 3 else None)
        else:
            designations.append(f"Article n°{i} &amp;eacute;t&eacute; <b>{code}</b>")
            descriptions.append(f"<p>Détails&nbsp;{i}</p>" if i % 3 else None)
        labels.append(code)
    n = len(labels)
    x = pd.DataFrame(
        {
            "designation": designations,
            "description": descriptions,
            "productid": [10_000 + i for i in range(n)],
            "imageid": [90_000 + i for i in range(n)],
        }
    )
    y = pd.DataFrame({"prdtypecode": labels})
    return x, y


def write_source(root: Path) -> Path:
    """Official layout with real JPEGs, one corrupt JPEG and a partial text_origin.csv."""
    x, y = product_frames()
    images = root / schema.IMAGE_TRAIN_DIR
    images.mkdir(parents=True)
    x.to_csv(root / schema.X_TRAIN_FILE)
    y.to_csv(root / schema.Y_TRAIN_FILE)
    ids = list(zip(x["imageid"], x["productid"], strict=True))
    for row in WITH_IMAGE:
        image_path_for(images, *ids[row]).write_bytes(make_jpeg())
    image_path_for(images, *ids[CORRUPT_IMAGE]).write_bytes(make_jpeg()[:150])
    pd.DataFrame({"index": [0, 1, 2], "origin": ["prefix_100", "full", "prefix_200"]}).to_csv(
        root / schema.TEXT_ORIGIN_FILE, index=False
    )
    return root


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A raw layer made by `import_dataset` (so it has a manifest)."""
    dest = tmp_path / "data" / "raw"
    import_dataset(write_source(tmp_path / "source"), dest)
    return dest


@pytest.fixture
def processed(raw: Path) -> Path:
    out = raw.parent / "processed"
    prepare_dataset(raw, out, PARAMS)
    return out


def read_all(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in schema.SPLITS}


def test_prepare_writes_every_split_with_the_processed_columns(processed: Path) -> None:
    frames = read_all(processed)
    total = len(CODES) * PER_CLASS

    for frame in frames.values():
        assert tuple(frame.columns) == schema.PROCESSED_COLUMNS
        assert frame[schema.INDEX_COL].dtype == "int64"
        assert frame[schema.TARGET_COL].dtype == "int64"
        assert frame["has_image"].dtype == bool
    indexes = [set(f[schema.INDEX_COL]) for f in frames.values()]
    assert sum(len(s) for s in indexes) == total
    assert set().union(*indexes) == set(range(total))
    # Each split holds each class, near its share (groups of 2 make it approximate).
    for name, fraction in parse_section(DataParams, PARAMS, "data").fractions().items():
        counts = frames[name][schema.TARGET_COL].value_counts()
        assert set(counts.index) == set(CODES)
        assert np.allclose(counts.to_numpy(), fraction * PER_CLASS, atol=2.5), (name, counts)


def test_split_index_files_match_the_parquet_files(processed: Path) -> None:
    frames = read_all(processed)
    for name, frame in frames.items():
        lines = (processed / "splits" / f"{name}.txt").read_text().splitlines()
        assert [int(line) for line in lines] == frame[schema.INDEX_COL].tolist()


def test_duplicate_texts_never_straddle_splits(processed: Path, raw: Path) -> None:
    x = pd.read_csv(raw / schema.X_TRAIN_FILE, index_col=0)
    keys = {
        i: normalize_for_dedup(d, s if isinstance(s, str) else "")
        for i, d, s in zip(x.index, x["designation"], x["description"], strict=True)
    }
    split_of_key: dict[str, set[str]] = {}
    for name, frame in read_all(processed).items():
        for index in frame[schema.INDEX_COL]:
            split_of_key.setdefault(keys[index], set()).add(name)
    assert len(split_of_key) < len(keys), "the fixture must contain duplicates"
    assert all(len(splits) == 1 for splits in split_of_key.values())


def test_prepare_is_deterministic_and_depends_on_the_seed(raw: Path, tmp_path: Path) -> None:
    first, second, other = tmp_path / "p1", tmp_path / "p2", tmp_path / "p3"
    prepare_dataset(raw, first, PARAMS)
    prepare_dataset(raw, second, PARAMS)
    prepare_dataset(raw, other, {**PARAMS, "seed": 8})

    for name in schema.SPLITS:
        assert (first / f"{name}.parquet").read_bytes() == (second / f"{name}.parquet").read_bytes()
        assert (first / "splits" / f"{name}.txt").read_text() == (
            second / "splits" / f"{name}.txt"
        ).read_text()
    assert (first / "splits" / "val.txt").read_text() != (other / "splits" / "val.txt").read_text()


def test_text_is_cleaned_and_raw_files_are_untouched(raw: Path, tmp_path: Path) -> None:
    before = {p: sha256_file(p) for p in raw.rglob("*") if p.is_file()}
    out = tmp_path / "processed"
    prepare_dataset(raw, out, PARAMS)

    rows = pd.concat(read_all(out).values()).set_index(schema.INDEX_COL)
    assert rows.loc[0, "designation"] == "Article n°0 été 10"
    assert rows.loc[1, "description"] == "Détails 1"
    assert rows.loc[0, "description"] == ""
    assert rows.loc[4, "designation"] == "ARTICLE N°0 ETE 10!"
    assert {p: sha256_file(p) for p in raw.rglob("*") if p.is_file()} == before


def test_images_are_resolved_relative_to_raw(processed: Path) -> None:
    rows = pd.concat(read_all(processed).values()).set_index(schema.INDEX_COL)

    with_image = rows[rows["has_image"]]
    assert sorted(with_image.index) == list(WITH_IMAGE)
    assert rows.loc[0, "image_path"] == "images/image_train/image_90000_product_10000.jpg"
    assert rows.loc[CORRUPT_IMAGE, "has_image"] == np.False_  # exists but does not decode
    assert rows.loc[CORRUPT_IMAGE, "image_path"] == ""
    assert (rows.loc[~rows["has_image"], "image_path"] == "").all()


def test_text_origin_comes_from_the_file_else_full(processed: Path, raw: Path) -> None:
    rows = pd.concat(read_all(processed).values()).set_index(schema.INDEX_COL)
    assert rows.loc[[0, 1, 2], "text_origin"].tolist() == ["prefix_100", "full", "prefix_200"]
    assert (rows.loc[3:, "text_origin"] == "full").all()

    (raw / schema.TEXT_ORIGIN_FILE).unlink()
    out = raw.parent / "no_origin"
    prepare_dataset(raw, out, PARAMS)
    assert (pd.concat(read_all(out).values())["text_origin"] == "full").all()


def test_metadata_records_provenance_and_counts(processed: Path, raw: Path) -> None:
    meta = json.loads((processed / schema.PROCESSED_METADATA_FILE).read_text())

    assert meta["raw_dir"] == str(raw)
    assert meta["raw_dir_resolved"] == str(raw.resolve())
    assert meta["raw_dir_from_processed"] == "../raw"
    assert meta["manifest_sha256"] == sha256_file(raw / schema.MANIFEST_FILE)
    assert meta["params"] == PARAMS
    assert sum(meta["sizes"].values()) == len(CODES) * PER_CLASS
    assert meta["images"]["train"] + meta["images"]["val"] + meta["images"]["test"] + meta[
        "images"
    ]["unseen"] == len(WITH_IMAGE)
    frames = read_all(processed)
    for name, frame in frames.items():
        assert meta["sizes"][name] == len(frame)
        assert meta["class_counts"][name] == {
            str(k): int(v) for k, v in frame[schema.TARGET_COL].value_counts().sort_index().items()
        }


def test_unseen_size_zero_gives_an_empty_unseen_split(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    result = prepare_dataset(raw, out, {**PARAMS, "unseen_size": 0})

    unseen = pd.read_parquet(out / "unseen.parquet")
    assert len(unseen) == 0
    assert tuple(unseen.columns) == schema.PROCESSED_COLUMNS
    assert (out / "splits" / "unseen.txt").read_text() == ""
    assert result.sizes["unseen"] == 0
    assert sum(result.sizes.values()) == len(CODES) * PER_CLASS


def test_the_test_split_does_not_move_with_unseen_or_val_size(raw: Path, tmp_path: Path) -> None:
    # The promotion gate compares champion and challenger on the test split: it must stay
    # the same products when the other fractions change.
    test_files = []
    for i, change in enumerate(({}, {"unseen_size": 0}, {"unseen_size": 0.2, "val_size": 0.3})):
        out = tmp_path / f"processed-{i}"
        prepare_dataset(raw, out, {**PARAMS, **change})
        test_files.append((out / "splits" / "test.txt").read_text())
    assert test_files[0] == test_files[1] == test_files[2]
    assert test_files[0].strip()
    other_seed = tmp_path / "other-seed"
    prepare_dataset(raw, other_seed, {**PARAMS, "seed": PARAMS["seed"] + 1})
    assert (other_seed / "splits" / "test.txt").read_text() != test_files[0]


@pytest.mark.parametrize("key", ["val_sise", "unseen"])
def test_unknown_data_keys_are_refused_with_the_valid_ones(
    raw: Path, tmp_path: Path, key: str
) -> None:
    with pytest.raises(
        ParamsError, match=rf"under `data`: {key} \(valid keys: feedback, seed, source"
    ):
        prepare_dataset(raw, tmp_path / "processed", {**PARAMS, key: 0.3})
    assert not (tmp_path / "processed").exists()


def test_summary_is_a_table_of_class_counts(raw: Path, tmp_path: Path) -> None:
    result = prepare_dataset(raw, tmp_path / "processed", PARAMS)
    summary = result.summary()
    lines = summary.splitlines()

    assert "train" in lines[1]
    assert "unseen" in lines[1]
    row_2583 = next(line for line in lines if line.lstrip().startswith("2583"))
    numbers = [int(token.replace(",", "")) for token in row_2583.split()[-5:]]
    assert numbers[:4] == [result.class_counts[s][2583] for s in schema.SPLITS]
    assert numbers[4] == PER_CLASS


def test_load_split_gives_absolute_image_paths(processed: Path, raw: Path) -> None:
    train = load_split(processed, "train")
    everything = pd.concat([load_split(processed, s) for s in schema.SPLITS])

    assert tuple(train.columns) == schema.PROCESSED_COLUMNS
    with_image = everything[everything["has_image"]]
    assert len(with_image) == len(WITH_IMAGE)
    for path in with_image["image_path"]:
        assert Path(path).is_absolute()
        assert Path(path).is_file()
        assert Path(path).is_relative_to(raw.resolve())
    assert (everything.loc[~everything["has_image"], "image_path"] == "").all()


def test_load_split_follows_the_project_when_it_moves(processed: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.move(processed.parent, moved)  # data/ -> moved/: raw and processed together

    everything = pd.concat([load_split(moved / "processed", s) for s in schema.SPLITS])

    paths = everything.loc[everything["has_image"], "image_path"]
    assert len(paths) == len(WITH_IMAGE)
    assert all(Path(p).is_file() and Path(p).is_relative_to(moved.resolve()) for p in paths)


def test_load_split_errors(processed: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_split(processed, "dev")
    with pytest.raises(DataError, match=r"train.parquet not found: run `rakuten-mlops data"):
        load_split(tmp_path / "empty", "train")
    shutil.rmtree(processed.parent / "raw")
    with pytest.raises(DataError, match="raw directory with the images not found"):
        load_split(processed, "train")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"val_size": 0.5, "test_size": 0.4, "unseen_size": 0.1}, "must leave rows for train"),
        ({"val_size": -0.1}, r"`data.val_size` must be >= 0.0, got -0.1"),
        ({"test_size": "a lot"}, "`data.test_size` must be a number, got 'a lot'"),
        ({"seed": 1.5}, "`data.seed` must be an integer, got 1.5"),
    ],
)
def test_invalid_params_are_refused(raw: Path, tmp_path: Path, params: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        prepare_dataset(raw, tmp_path / "processed", params)
    assert not (tmp_path / "processed").exists()


def test_prepare_refuses_unusable_raw_data(raw: Path, tmp_path: Path) -> None:
    y = pd.read_csv(raw / schema.Y_TRAIN_FILE, index_col=0)
    y.loc[3, "prdtypecode"] = 77
    broken = tmp_path / "broken"
    shutil.copytree(raw, broken)
    y.to_csv(broken / schema.Y_TRAIN_FILE)
    with pytest.raises(DataError, match=r"prdtypecode'.*rows 3: 77"):
        prepare_dataset(broken, tmp_path / "processed", PARAMS)
    with pytest.raises(DataError, match="raw directory not found"):
        prepare_dataset(tmp_path / "nowhere", tmp_path / "processed", PARAMS)


def test_assign_splits_keeps_groups_whole_and_ignores_row_order() -> None:
    rng = np.random.default_rng(0)
    n = 600
    labels = pd.Series(rng.choice([1, 2, 3], size=n), index=range(n))
    keys = pd.Series([f"text {i // 3}" if i < 300 else "" for i in range(n)], index=range(n))
    fractions = {"train": 0.6, "val": 0.2, "test": 0.15, "unseen": 0.05}

    splits = assign_splits(keys, labels, fractions, seed=3)
    shuffled = rng.permutation(n)
    again = assign_splits(keys.iloc[shuffled], labels.iloc[shuffled], fractions, seed=3)

    assert again.sort_index().equals(splits)
    grouped = splits[:300].groupby(keys[:300]).nunique()
    assert (grouped == 1).all()
    # Empty keys are not one giant group: those rows spread over every split.
    assert set(splits[300:]) == {"train", "val", "test", "unseen"}
    shares = splits.value_counts(normalize=True)
    for name, fraction in fractions.items():
        assert abs(shares[name] - fraction) < 0.03


def test_cli_prepare_uses_the_params_file(raw: Path, tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        "seed: 1\ndata:\n  val_size: 0.2\n  test_size: 0.2\n  unseen_size: 0\n  seed: 11\n"
    )
    out = tmp_path / "processed"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "prepare",
            "--raw-dir",
            str(raw),
            "--out-dir",
            str(out),
            "--params",
            str(params_file),
        ],
    )

    assert result.exit_code == 0, result.output
    assert f"prepared {len(CODES) * PER_CLASS} products" in result.output
    meta = json.loads((out / schema.PROCESSED_METADATA_FILE).read_text())
    assert meta["params"] == {"val_size": 0.2, "test_size": 0.2, "unseen_size": 0.0, "seed": 11}


def test_cli_prepare_reports_bad_params_without_traceback(raw: Path, tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text("data:\n  val_size: 0.9\n  test_size: 0.9\n")
    args = ["--raw-dir", str(raw), "--out-dir", str(tmp_path / "p"), "--params", str(params_file)]
    result = CliRunner().invoke(app, ["data", "prepare", *args])
    assert result.exit_code == 1
    assert "must leave rows for train" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "seed: 1\nsede: 2\n",
            "unknown top-level key(s) sede (valid keys: data, evaluate, gate, model, review, seed)",
        ),
        (
            "data:\n  val_sise: 0.30\n",
            "unknown key(s) under `data`: val_sise (valid keys: feedback, seed, source, test_size, "
            "unseen_size, val_size)",
        ),
        ("data: [0.3]\n", "`data` must be a mapping"),
    ],
)
def test_every_params_key_is_checked_before_any_work(
    tmp_path: Path, text: str, expected: str
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError) as error:
        load_params(params_file)
    assert expected in str(error.value)
    # `train` refuses the file before loading any data (the data dir does not exist).
    missing = tmp_path / "no-data"
    result = CliRunner().invoke(
        app, ["train", "--params", str(params_file), "--data-dir", str(missing), "--no-progress"]
    )
    assert result.exit_code == 1
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_the_project_params_file_passes_the_checks() -> None:
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert set(params) <= {"seed", "data", "model", "review", "gate", "evaluate"}
    parse_section(DataParams, params["data"], "data")
