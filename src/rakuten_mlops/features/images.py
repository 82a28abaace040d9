"""Where a product's image lives and whether it can be used.

Image decoding into tensors belongs to the model code; this module only answers the data
stages' two questions, cheaply enough for the 84,916 images of the full dataset.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from rakuten_mlops.schema import image_filename

# A JPEG ends with the EOI marker; some encoders pad after it, so look at the tail only.
_JPEG_EOI = b"\xff\xd9"
_TAIL_BYTES = 1024


def image_path_for(images_dir: Path, imageid: int, productid: int) -> Path:
    """Path of a product's image inside an image directory (`images/image_train`)."""
    return images_dir / image_filename(int(imageid), int(productid))


def is_decodable(path: Path, *, full: bool = False) -> bool:
    """Whether `path` is an image Pillow can open, without raising.

    The default check parses the headers (`Image.verify`) and, for JPEG, looks for the
    end-of-image marker so that truncated downloads are caught: about 0.1 ms per image,
    against ~2 ms for a full decode.

    Args:
        path: the image file.
        full: decode every pixel instead (slow, catches corrupt entropy-coded data).
    """
    try:
        # A decompression-bomb warning means an absurd size: treat it as unusable.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if full:
                    image.load()
                    return True
                image_format = image.format
                image.verify()
        if image_format == "JPEG":
            return _has_jpeg_end(path)
        return True
    except Exception:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        return False


def _has_jpeg_end(path: Path) -> bool:
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - _TAIL_BYTES))
        return _JPEG_EOI in fh.read()
