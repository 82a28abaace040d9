"""Decode product images into small RGB arrays, with an on-disk cache for training.

A missing or undecodable image is a normal case (most products of the sample have none):
every function here answers `None` for it instead of raising, and the model falls back to
text-only for that product.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# Bump when the decoding below changes, so stale cache entries are not reused.
_CACHE_VERSION = "v1"
_FAILED_SUFFIX = ".failed"
# Refuse absurd images (decompression bombs) before decoding them.
_MAX_PIXELS = 40_000_000


def decode_image(source: bytes | str | Path, size: int) -> np.ndarray | None:
    """Decode an image (bytes or file path) into a `(size, size, 3)` uint8 RGB array.

    JPEGs are downscaled while decoding (`Image.draft`), which is several times faster than
    decoding at full resolution. The image is stretched to a square: product photos are
    nearly always square already.

    Returns:
        The array, or `None` when the file is missing or the bytes are not a decodable image.
    """
    try:
        stream: io.BytesIO | str | Path = (
            io.BytesIO(source) if isinstance(source, bytes) else source
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                if image.width * image.height > _MAX_PIXELS:
                    return None
                image.draft("RGB", (size, size))
                rgb = image.convert("RGB")
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
                return np.asarray(rgb, dtype=np.uint8).copy()
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
    ):
        # OSError covers missing files and truncated data; SyntaxError is what a few
        # Pillow plugins raise on garbage.
        return None


class ImageTensorCache:
    """Decoded, resized images on disk, keyed by path + mtime + size + resolution.

    A changed file (new mtime or size) gets a new key, so the cache never serves a stale
    image; an undecodable file is remembered too, so it is not retried on every training.
    """

    def __init__(self, directory: Path, size: int) -> None:
        self.directory = Path(directory)
        self.size = size

    def _key(self, path: Path) -> str | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        raw = f"{_CACHE_VERSION}|{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{self.size}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def load(self, path: str | Path) -> np.ndarray | None:
        """The decoded image of `path` (from the cache when possible), `None` if unusable."""
        path = Path(path)
        key = self._key(path)
        if key is None:
            return None
        entry = self.directory / key[:2] / f"{key}.npy"
        if entry.is_file():
            try:
                array = np.load(entry, allow_pickle=False)
                if array.shape == (self.size, self.size, 3) and array.dtype == np.uint8:
                    return np.asarray(array)
            except (OSError, ValueError):
                logger.warning("ignoring corrupt image cache entry %s", entry)
        if entry.with_suffix(_FAILED_SUFFIX).is_file():
            return None
        array = decode_image(path, self.size)
        self._store(entry, array)
        return array

    def _store(self, entry: Path, array: np.ndarray | None) -> None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            if array is None:
                entry.with_suffix(_FAILED_SUFFIX).touch()
                return
            # Write then rename: a concurrent reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            Path(tmp).replace(entry)
        except OSError as exc:
            # The cache is an optimisation: a read-only or full disk must not stop training.
            logger.warning("cannot write image cache entry %s: %s", entry, exc)


def load_images(
    paths: Sequence[str | None],
    size: int,
    cache_dir: Path | None = None,
    *,
    progress: bool = False,
    desc: str = "images",
) -> list[np.ndarray | None]:
    """Decode the images at `paths` ("" or None = no image), through the cache if given."""
    cache = ImageTensorCache(cache_dir, size) if cache_dir is not None else None
    arrays: list[np.ndarray | None] = []
    for path in tqdm(paths, desc=desc, disable=not progress, leave=False, unit="img"):
        if not path:
            arrays.append(None)
        elif cache is not None:
            arrays.append(cache.load(path))
        else:
            arrays.append(decode_image(Path(path), size))
    return arrays
