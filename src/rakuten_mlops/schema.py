"""The project's contract: files, columns, classes and layers of the data, the columns of a
service's prediction records.

Every layer imports it (data stages, model, inference, database, monitoring, serving, CLI)
and it imports nothing of the project: it is the ground floor. It holds no logic beyond tiny
pure helpers.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath

# Official file names (raw layer, identical to the challenge / Hugging Face dataset).
X_TRAIN_FILE = "X_train_update.csv"
Y_TRAIN_FILE = "Y_train_CVw08PX.csv"
X_TEST_FILE = "X_test_update.csv"
IMAGES_ZIP = "images.zip"
IMAGE_TRAIN_DIR = PurePosixPath("images/image_train")
IMAGE_TEST_DIR = PurePosixPath("images/image_test")
# Optional, sample-only: how complete each row's text is (`index`, `origin`).
TEXT_ORIGIN_FILE = "text_origin.csv"
# The `text_origin` of a row whose source does not say otherwise.
DEFAULT_TEXT_ORIGIN = "full"
MANIFEST_FILE = "manifest.json"

DOWNLOAD_FILES = (X_TRAIN_FILE, Y_TRAIN_FILE, X_TEST_FILE, IMAGES_ZIP)

# Columns of the official X files (the first, unnamed column is the product index).
INDEX_COL = "index"
X_COLUMNS = ("designation", "description", "productid", "imageid")
TARGET_COL = "prdtypecode"

# The 27 product type codes and their (unofficial, community) names.
CATEGORY_NAMES: dict[int, str] = {
    10: "Livre occasion",
    40: "Jeu vidéo, accessoire tech.",
    50: "Accessoire console",
    60: "Console de jeu",
    1140: "Figurine",
    1160: "Carte de collection",
    1180: "Jeu de plateau",
    1280: "Jouet enfant, déguisement",
    1281: "Jeu de société",
    1300: "Jouet tech / modélisme",
    1301: "Chaussettes, layette",
    1302: "Jeu d'extérieur",
    1320: "Puériculture",
    1560: "Mobilier intérieur",
    1920: "Linge de maison",
    1940: "Épicerie, cuisine",
    2060: "Décoration intérieure",
    2220: "Animalerie",
    2280: "Revues et journaux",
    2403: "Magazines, livres, BD",
    2462: "Jeu vidéo d'occasion",
    2522: "Papeterie, bureautique",
    2582: "Mobilier extérieur",
    2583: "Piscine",
    2585: "Bricolage, outillage",
    2705: "Livre neuf",
    2905: "Jeu PC",
}
PRODUCT_CODES: tuple[int, ...] = tuple(sorted(CATEGORY_NAMES))

# Processed layer (data/processed): one Parquet file per split with these columns.
SPLITS = ("train", "val", "test", "unseen")
PROCESSED_COLUMNS = (
    INDEX_COL,  # int64, the official product index
    "productid",  # int64
    "imageid",  # int64
    "designation",  # str, cleaned title
    "description",  # str, cleaned description ("" when missing)
    "image_path",  # str, relative to the raw dir ("" when no usable image)
    "has_image",  # bool, the image file exists and decodes
    "text_origin",  # str, "full" unless the source says otherwise
    TARGET_COL,  # int64
)
PROCESSED_METADATA_FILE = "metadata.json"

# Model input (pyfunc / API): `designation` required, the others optional.
MODEL_INPUT_COLUMNS = ("designation", "description", "image_path", "image_bytes")
# Model output (pyfunc `predict`, batch prediction files), in this order.
OUTPUT_COLUMNS = (
    TARGET_COL,
    "category",
    "confidence",
    "needs_review",
    "top_1_code",
    "top_1_proba",
    "top_2_code",
    "top_2_proba",
    "top_3_code",
    "top_3_proba",
    "has_image",
)


def image_filename(imageid: int, productid: int) -> str:
    """Official image file name of a product."""
    return f"image_{imageid}_product_{productid}.jpg"


# A prediction record of the service as monitoring reads it (one row per prediction, with the
# reviewer's code as `true_code` when there is one): the database layer returns these
# columns and the online-quality workflow computes on them.
RECORD_COLUMNS = (
    "prediction_id",
    "request_id",
    "productid",
    "designation",
    "variant",
    "model_version",
    "shadow",
    "prdtypecode",
    "confidence",
    "true_code",
)


def as_id(value: object) -> int | None:
    """A product / image id cell as a positive int (the service stores them as text; a CSV
    cell may be a float or missing), else None."""
    if value is None:
        return None
    if isinstance(value, float):
        return int(value) if not math.isnan(value) and value.is_integer() and value > 0 else None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None
