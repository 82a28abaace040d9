"""The processed rows of labelled products (`schema.PROCESSED_COLUMNS`): a library shared by
the `prepare` stage and the feedback layer, which builds its rows the same way."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from tqdm import tqdm

from rakuten_mlops.features.images import is_decodable
from rakuten_mlops.features.text import clean_text
from rakuten_mlops.schema import (
    DEFAULT_TEXT_ORIGIN,
    IMAGE_TRAIN_DIR,
    INDEX_COL,
    PROCESSED_COLUMNS,
    TARGET_COL,
    image_filename,
)


def find_usable_images(raw_dir: Path, products: pd.DataFrame) -> pd.Series:
    """Whether each product's training image exists and decodes (bool, same index)."""
    images_dir = raw_dir / IMAGE_TRAIN_DIR
    on_disk: set[str] = set()
    if images_dir.is_dir():
        with os.scandir(images_dir) as entries:
            on_disk = {entry.name for entry in entries if entry.is_file()}
    names = [
        image_filename(i, p)
        for i, p in zip(products["imageid"], products["productid"], strict=True)
    ]
    usable = np.zeros(len(names), dtype=bool)
    candidates = [pos for pos, name in enumerate(names) if name in on_disk]
    for pos in tqdm(candidates, desc="check images", unit="img", leave=False):
        usable[pos] = is_decodable(images_dir / names[pos])
    return pd.Series(usable, index=products.index, name="has_image")


def build_processed_frame(
    products: pd.DataFrame, text_origin: pd.Series | None, has_image: pd.Series
) -> pd.DataFrame:
    """The processed rows (`schema.PROCESSED_COLUMNS`) of the labelled products.

    Args:
        products: from `load_labelled_products` (indexed by the official index).
        text_origin: `origin` per index, or None ("full" for every row).
        has_image: usable image per index.
    """
    index = products.index
    origin = (
        pd.Series(DEFAULT_TEXT_ORIGIN, index=index)
        if text_origin is None
        else text_origin.reindex(index).fillna(DEFAULT_TEXT_ORIGIN)
    )
    usable = has_image.reindex(index).fillna(False).astype(bool)
    paths = [
        (PurePosixPath(IMAGE_TRAIN_DIR) / image_filename(i, p)).as_posix() if ok else ""
        for i, p, ok in zip(products["imageid"], products["productid"], usable, strict=True)
    ]
    frame = pd.DataFrame(
        {
            INDEX_COL: index.to_numpy(dtype="int64"),
            "productid": products["productid"].to_numpy(dtype="int64"),
            "imageid": products["imageid"].to_numpy(dtype="int64"),
            "designation": [clean_text(v) for v in products["designation"]],
            "description": [clean_text(v) for v in products["description"]],
            "image_path": paths,
            "has_image": usable.to_numpy(dtype=bool),
            "text_origin": origin.astype(str).to_numpy(),
            TARGET_COL: products[TARGET_COL].to_numpy(dtype="int64"),
        }
    )
    return frame[list(PROCESSED_COLUMNS)]
