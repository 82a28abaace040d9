"""Validate the raw layer: schema (pandera), alignment, labels, text quality, images.

Two severities:

* errors: the data cannot be used (missing file or column, non-integer ids, unknown label,
  duplicated index, X and Y not aligned, too many empty titles). `ValidationResult.ok` is
  False and `rakuten-mlops data validate` exits 1.
* warnings: quality issues that real data has (missing images or descriptions, duplicated
  products). They are counted in the report; the pipeline goes on.

Every message names the file, the column and example rows (the official index).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from tqdm import tqdm

from rakuten_mlops.errors import DataError
from rakuten_mlops.features.images import is_decodable
from rakuten_mlops.features.text import clean_text, normalize_for_dedup
from rakuten_mlops.schema import (
    IMAGE_TRAIN_DIR,
    INDEX_COL,
    PRODUCT_CODES,
    TARGET_COL,
    TEXT_ORIGIN_FILE,
    X_COLUMNS,
    X_TEST_FILE,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    image_filename,
)

# Above this share of empty titles the text model has nothing to learn from.
DEFAULT_MAX_EMPTY_DESIGNATION_RATIO = 0.01
_EXAMPLES = 5
_KNOWN_CODE_ERROR = f"with a code outside the {len(PRODUCT_CODES)} known codes"
_NEGATIVE_ERROR = "with a negative value"


def _id_column() -> pa.Column:
    return pa.Column("int64", coerce=True, checks=pa.Check.ge(0, error=_NEGATIVE_ERROR))


def _index() -> pa.Index:
    return pa.Index("int64", coerce=True, unique=True)


# Text columns stay nullable here: empty titles are counted (and judged) separately.
X_SCHEMA = pa.DataFrameSchema(
    {
        "designation": pa.Column(str, nullable=True),
        "description": pa.Column(str, nullable=True),
        "productid": _id_column(),
        "imageid": _id_column(),
    },
    index=_index(),
    name=X_TRAIN_FILE,
)
Y_SCHEMA = pa.DataFrameSchema(
    {
        TARGET_COL: pa.Column(
            "int64", coerce=True, checks=pa.Check.isin(PRODUCT_CODES, error=_KNOWN_CODE_ERROR)
        )
    },
    index=_index(),
    name=Y_TRAIN_FILE,
)
TEXT_ORIGIN_SCHEMA = pa.DataFrameSchema(
    {INDEX_COL: pa.Column("int64", coerce=True, unique=True), "origin": pa.Column(str)},
    name=TEXT_ORIGIN_FILE,
)


@dataclass
class ValidationResult:
    """Outcome of `validate_raw`: errors make the data unusable, warnings do not."""

    raw_dir: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    report_path: str | None = None

    @property
    def ok(self) -> bool:
        """True when no error was found."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the report)."""
        return {
            "raw_dir": self.raw_dir,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "stats": self.stats,
        }

    def summary(self) -> str:
        """Readable multi-line summary for the CLI."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.errors)} errors)"
        lines = [f"raw data {self.raw_dir}: {verdict}, {len(self.warnings)} warnings"]
        stats = self.stats
        if "products" in stats:
            lines.append(f"  products: {stats['products']:,} ({stats.get('classes', 0)} classes)")
        if "images" in stats:
            share = stats["images"] / stats["products"] if stats.get("products") else 0.0
            lines.append(
                f"  images:   {stats['images']:,} decodable ({share:.1%} of products), "
                f"{stats.get('image_files_undecodable', 0):,} undecodable"
            )
        if "missing_descriptions" in stats:
            lines.append(
                f"  text:     {stats['missing_descriptions']:,} without description, "
                f"{stats['empty_designations']:,} empty titles, "
                f"{stats['duplicate_text_rows']:,} rows share their text with another"
            )
        lines += [f"error: {message}" for message in self.errors]
        lines += [f"warning: {message}" for message in self.warnings]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def validate_raw(
    raw_dir: Path,
    report_path: Path,
    *,
    max_empty_designation_ratio: float = DEFAULT_MAX_EMPTY_DESIGNATION_RATIO,
    check_images: bool = True,
) -> ValidationResult:
    """Validate the raw layer and write a JSON report.

    Args:
        raw_dir: the raw directory (official layout).
        report_path: where the JSON report goes (parents are created).
        max_empty_designation_ratio: share of empty titles above which it is an error.
        check_images: look for and decode-check each product's image.

    Returns:
        The result; problems in the data are reported in it, never raised.
    """
    raw_dir, report_path = Path(raw_dir), Path(report_path)
    result = ValidationResult(raw_dir=str(raw_dir))
    if not raw_dir.is_dir():
        result.errors.append(f"raw directory not found: {raw_dir}")
    else:
        _validate_into(result, raw_dir, max_empty_designation_ratio, check_images)
    result.report_path = str(report_path)
    _write_json(report_path, result.to_dict())
    return result


def load_labelled_products(raw_dir: Path) -> pd.DataFrame:
    """Read and type-check `X_train` + `Y_train` into one frame indexed by the official index.

    Columns: `designation`, `description` (raw text, NaN when missing), `productid`,
    `imageid`, `prdtypecode` (int64).

    Raises:
        DataError: a file is missing or unusable (same messages as `validate_raw`).
    """
    raw_dir = Path(raw_dir)
    errors: list[str] = []
    x = _load_checked(raw_dir / X_TRAIN_FILE, X_SCHEMA, errors)
    y = _load_checked(raw_dir / Y_TRAIN_FILE, Y_SCHEMA, errors)
    if x is not None and y is not None:
        errors += _check_alignment(x, y)
    if not errors and x is not None and x.empty:
        errors.append(f"{X_TRAIN_FILE}: no product rows")
    if errors or x is None or y is None:
        raise DataError("; ".join(errors))
    return x.join(y[TARGET_COL], how="inner").sort_index()


def load_text_origin(raw_dir: Path) -> pd.Series | None:
    """The `origin` of each row from `text_origin.csv`, indexed by the official index.

    Returns:
        None when the file is absent (the official data has none).

    Raises:
        DataError: the file exists but is unusable.
    """
    path = Path(raw_dir) / TEXT_ORIGIN_FILE
    if not path.is_file():
        return None
    errors: list[str] = []
    frame = _load_checked(path, TEXT_ORIGIN_SCHEMA, errors, index_col=None)
    if frame is None:
        raise DataError("; ".join(errors))
    return frame.set_index(INDEX_COL)["origin"]


def _validate_into(
    result: ValidationResult, raw_dir: Path, max_empty_ratio: float, check_images: bool
) -> None:
    x = _load_checked(raw_dir / X_TRAIN_FILE, X_SCHEMA, result.errors)
    y = _load_checked(raw_dir / Y_TRAIN_FILE, Y_SCHEMA, result.errors)
    if y is not None:
        counts = y[TARGET_COL].value_counts().sort_index()
        result.stats["labels"] = len(y)
        result.stats["classes"] = int(counts.size)
        result.stats["class_counts"] = {str(code): int(n) for code, n in counts.items()}
        missing_classes = sorted(set(PRODUCT_CODES) - set(counts.index))
        if missing_classes:
            result.warnings.append(
                f"{Y_TRAIN_FILE}: column '{TARGET_COL}': {len(missing_classes)} of the "
                f"{len(PRODUCT_CODES)} codes have no product ({_join(missing_classes)})"
            )
    if x is None:
        return
    result.stats["products"] = len(x)
    if x.empty:
        result.errors.append(f"{X_TRAIN_FILE}: no product rows")
        return
    if y is not None:
        result.errors.extend(_check_alignment(x, y))
    _check_text(result, x, y, max_empty_ratio)
    _check_text_origin(result, raw_dir, x)
    if check_images:
        _check_images(result, raw_dir, x)
    if (raw_dir / X_TEST_FILE).is_file():
        # The unlabelled test file feeds no training stage: its problems are warnings.
        test_errors: list[str] = []
        x_test = _load_checked(raw_dir / X_TEST_FILE, X_SCHEMA, test_errors)
        result.warnings.extend(test_errors)
        if x_test is not None:
            result.stats["test_products"] = len(x_test)


def _load_checked(
    path: Path, schema: pa.DataFrameSchema, errors: list[str], index_col: int | None = 0
) -> pd.DataFrame | None:
    """Read a CSV as text and validate/coerce it; append messages to `errors` on failure."""
    name = path.name
    if not path.is_file():
        errors.append(f"{name}: file not found in {path.parent}")
        return None
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        # Everything as text: pandera's coercion then names the rows that are not integers.
        frame = pd.read_csv(
            path, index_col=index_col, dtype=str, keep_default_na=False, na_values=[""]
        )
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        errors.append(f"{name}: cannot be read as CSV ({exc})")
        return None
    if index_col is not None and header and header[0] in (*X_COLUMNS, TARGET_COL):
        errors.append(
            f"{name}: the first column must be the product index, found '{header[0]}' "
            "(file saved without its index?)"
        )
        return None
    try:
        # pandera's error formatter trips a pandas FutureWarning that users cannot act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        errors.extend(describe_failures(name, exc.failure_cases))
        return None


def describe_failures(filename: str, failure_cases: pd.DataFrame) -> list[str]:
    """Turn pandera's failure cases into one message per (column, problem).

    Value checks on a column whose type could not be coerced are left out: they only
    repeat the type problem.
    """
    messages: list[str] = []
    cases = failure_cases.copy()
    missing = cases[cases["check"] == "column_in_dataframe"]
    messages += [f"{filename}: missing column '{col}'" for col in missing["failure_case"]]
    cases = cases[cases["check"] != "column_in_dataframe"]
    # An empty cell fails coercion too; `not_nullable` already reports it.
    checks = cases["check"].astype(str)
    cases = cases[~(checks.str.startswith("coerce_dtype") & cases["failure_case"].isna())]
    cases["field"] = [
        "index (first column)" if ctx == "Index" else f"column '{col}'"
        for ctx, col in zip(cases["schema_context"], cases["column"], strict=True)
    ]
    type_checks = cases["check"].astype(str).str.startswith(("coerce_dtype", "not_nullable"))
    broken_fields = set(cases.loc[type_checks, "field"])
    for (fld, check), group in cases.groupby(["field", "check"], sort=True):
        check = str(check)
        if check.startswith("dtype("):
            continue  # pandera repeats each coercion failure as a dtype failure
        if fld in broken_fields and not check.startswith(("coerce_dtype", "not_nullable")):
            continue
        rows = list(group["index"])
        values = list(group["failure_case"])
        if check.startswith("coerce_dtype"):
            wanted = "an integer" if "int" in check else f"of type {check[13:-1]}"
            detail = (
                f"{_rows(len(rows))} with a value that is not {wanted} ({_examples(rows, values)})"
            )
        elif check == "not_nullable":
            detail = f"{_rows(len(rows))} with an empty value (rows {_join(rows)})"
        elif check == "field_uniqueness":
            dupes = sorted(set(values), key=str)
            detail = f"{_rows(len(rows))} with a duplicated value (values {_join(dupes)})"
        else:
            detail = f"{_rows(len(rows))} {check} ({_examples(rows, values)})"
        messages.append(f"{filename}: {fld}: {detail}")
    return messages


def dedup_keys(products: pd.DataFrame) -> pd.Series:
    """`normalize_for_dedup(designation, description)` of each row ("" when both are empty)."""
    designation = products["designation"].fillna("").astype(str)
    description = products["description"].fillna("").astype(str)
    return pd.Series(
        [normalize_for_dedup(d, s) for d, s in zip(designation, description, strict=True)],
        index=products.index,
        dtype=object,
    )


def _check_alignment(x: pd.DataFrame, y: pd.DataFrame) -> list[str]:
    only_x = x.index.difference(y.index)
    only_y = y.index.difference(x.index)
    problems = []
    if len(only_x):
        problems.append(
            f"{len(only_x):,} products of {X_TRAIN_FILE} have no label (rows {_join(only_x)})"
        )
    if len(only_y):
        problems.append(
            f"{len(only_y):,} labels have no product in {X_TRAIN_FILE} (rows {_join(only_y)})"
        )
    if not problems:
        return []
    return [f"{X_TRAIN_FILE} and {Y_TRAIN_FILE}: index not aligned: " + "; ".join(problems)]


def _check_text(
    result: ValidationResult, x: pd.DataFrame, y: pd.DataFrame | None, max_empty_ratio: float
) -> None:
    designation = x["designation"].map(clean_text)
    description = x["description"].map(clean_text)
    empty = designation.index[designation.eq("")]
    result.stats["empty_designations"] = len(empty)
    if len(empty):
        ratio = len(empty) / len(x)
        message = (
            f"{X_TRAIN_FILE}: column 'designation': {len(empty):,} rows are empty after "
            f"cleaning ({ratio:.2%}; rows {_join(empty)})"
        )
        if ratio > max_empty_ratio:
            result.errors.append(f"{message}, more than the {max_empty_ratio:.2%} allowed")
        else:
            result.warnings.append(message)

    no_description = int(description.eq("").sum())
    result.stats["missing_descriptions"] = no_description
    if no_description:
        result.warnings.append(
            f"{X_TRAIN_FILE}: column 'description': {no_description:,} rows "
            f"({no_description / len(x):.1%}) have no description"
        )

    dup_ids = x.index[x["productid"].duplicated(keep=False)]
    result.stats["duplicate_productid_rows"] = len(dup_ids)
    if len(dup_ids):
        result.warnings.append(
            f"{X_TRAIN_FILE}: column 'productid': {len(dup_ids):,} rows share their "
            f"productid with another row (rows {_join(dup_ids)})"
        )

    keys = dedup_keys(x)
    keys = keys[keys.ne("")]
    duplicated = keys[keys.duplicated(keep=False)]
    result.stats["duplicate_text_rows"] = len(duplicated)
    result.stats["duplicate_text_groups"] = int(duplicated.nunique())
    conflicting = 0
    if y is not None and len(duplicated):
        labels = y[TARGET_COL].reindex(duplicated.index)
        conflicting = int((labels.groupby(duplicated).nunique() > 1).sum())
    result.stats["conflicting_label_groups"] = conflicting
    if len(duplicated):
        result.warnings.append(
            f"{X_TRAIN_FILE}: columns 'designation'+'description': {len(duplicated):,} rows "
            f"in {duplicated.nunique():,} groups have the same normalised text, "
            f"{conflicting:,} of them with different labels (rows {_join(duplicated.index)})"
        )


def _check_text_origin(result: ValidationResult, raw_dir: Path, x: pd.DataFrame) -> None:
    try:
        origin = load_text_origin(raw_dir)
    except DataError as exc:
        result.errors.append(str(exc))
        return
    if origin is None:
        return
    result.stats["text_origin"] = {str(k): int(v) for k, v in origin.value_counts().items()}
    unknown = origin.index.difference(x.index)
    uncovered = x.index.difference(origin.index)
    if len(unknown):
        result.warnings.append(
            f"{TEXT_ORIGIN_FILE}: column '{INDEX_COL}': {len(unknown):,} rows are not "
            f"products of {X_TRAIN_FILE} (rows {_join(unknown)})"
        )
    if len(uncovered):
        result.warnings.append(
            f"{TEXT_ORIGIN_FILE}: {len(uncovered):,} products have no origin and count as "
            f"'full' (rows {_join(uncovered)})"
        )


def _check_images(result: ValidationResult, raw_dir: Path, x: pd.DataFrame) -> None:
    images_dir = raw_dir / IMAGE_TRAIN_DIR
    names = [image_filename(i, p) for i, p in zip(x["imageid"], x["productid"], strict=True)]
    on_disk = _list_names(images_dir)
    found = [(idx, name) for idx, name in zip(x.index, names, strict=True) if name in on_disk]
    undecodable = [
        idx
        for idx, name in tqdm(found, desc="check images", unit="img", leave=False)
        if not is_decodable(images_dir / name)
    ]
    decodable = len(found) - len(undecodable)
    orphans = len(on_disk - set(names))
    result.stats.update(
        images=decodable,
        image_files_found=len(found),
        image_files_undecodable=len(undecodable),
        image_files_orphan=orphans,
    )
    if not on_disk:
        result.warnings.append(
            f"{IMAGE_TRAIN_DIR}/: no image found in {images_dir}: every product is text-only"
        )
    elif len(found) < len(x):
        result.warnings.append(
            f"{IMAGE_TRAIN_DIR}/: {len(x) - len(found):,} of {len(x):,} products have no image "
            "file (they are text-only)"
        )
    if undecodable:
        result.warnings.append(
            f"{IMAGE_TRAIN_DIR}/: {len(undecodable):,} image files do not decode "
            f"(rows {_join(undecodable)})"
        )
    if orphans:
        result.warnings.append(
            f"{IMAGE_TRAIN_DIR}/: {orphans:,} files match no product of {X_TRAIN_FILE}"
        )


def _list_names(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    with os.scandir(directory) as entries:
        return {entry.name for entry in entries if entry.is_file()}


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


def _examples(rows: Sequence[object], values: Sequence[object]) -> str:
    shown = min(len(rows), _EXAMPLES)
    more = ", ..." if len(rows) > shown else ""
    return f"rows {_join(rows[:shown], limit=shown)}{more}: {_join(values[:shown], limit=shown, quote=True)}{more}"


def _join(items: Iterable[object], *, limit: int = _EXAMPLES, quote: bool = False) -> str:
    items = list(items)
    shown = [_format(item, quote) for item in items[:limit]]
    suffix = ", ..." if len(items) > limit else ""
    return ", ".join(shown) + suffix


def _format(value: object, quote: bool) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "empty"
    if quote and isinstance(value, str):
        return repr(value)
    return str(value)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
