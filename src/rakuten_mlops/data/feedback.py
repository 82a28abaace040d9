"""Reviewers' corrections as labelled data: the append-only feedback layer.

`export_feedback` reads the prediction service's database (tables `predictions` and
`feedback`, see `db/models.py`) and writes the products reviewers corrected into a new
batch folder in the official raw layout::

    data/feedback/
      batch-20261201T104512123456Z/
        X_train_update.csv   unnamed index, designation, description, productid, imageid
        Y_train_CVw08PX.csv  unnamed index, prdtypecode (the corrected code)
        images/image_train/image_<imageid>_product_<productid>.jpg   (stored copies)
        manifest.json        feedback ids covered, filters, class counts, file hashes

A batch is never rewritten: the next export only takes feedback rows with a larger id than
the last batch's `last_feedback_id` (nothing new, no batch). Within and across batches the
latest correction of a product wins (`load_feedback_layer`).

Who counts as a reviewer: when the database has a `users` table (security migration) with
`username` and `role`, only feedback whose `username` belongs to a user with role
`reviewer` or `admin` is exported. Feedback from a username the table does not know (a
deleted user, or rows written outside the service) or from another role is not trusted:
it is counted under "not from a reviewer or admin" and never exported. The role is the
user's role at export time. A reviewer disabled since is still trusted: the correction
was valid when it was made (disabling stops new requests, it does not retract past
work); a correction to take back is undone in the service (`undone_at`). Without that
table (or without a `username` column on `feedback`) every feedback row is exported: a
database from before users and roles existed knew one caller only, the built-in admin.
The manifest says which rule applied.

`merge_feedback` is the pure function `data prepare` uses to add the layer to the training
split while the validation and test splits stay exactly as without feedback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.config import ParamsError
from rakuten_mlops.db.session import redact_database_url
from rakuten_mlops.errors import DataError, RakutenError
from rakuten_mlops.schema import (
    IMAGE_TRAIN_DIR,
    INDEX_COL,
    PROCESSED_COLUMNS,
    PRODUCT_CODES,
    TARGET_COL,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    image_filename,
)

logger = logging.getLogger(__name__)

BATCH_PREFIX = "batch-"
BATCH_MANIFEST = "manifest.json"
# Feedback rows get indexes (and, when the prediction had none, product / image ids) far
# above the official ones (< 100,000), derived from the feedback id: stable across exports.
FEEDBACK_INDEX_BASE = 1_000_000_000
FEEDBACK_TEXT_ORIGIN = "feedback"
REVIEWER_ROLES = ("reviewer", "admin")
UNTRUSTED = "not from a reviewer or admin (unknown user or other role)"
FEEDBACK_REPORT_FILE = "feedback_report.json"
FEEDBACK_HOLDOUT_FILE = "feedback_holdout.parquet"


@dataclass(frozen=True)
class FeedbackParams:
    """`data.feedback` in params.yaml: how reviewers' corrections join the training data.

    Attributes:
        enabled: merge the feedback layer into the training split in `data prepare` (off
            when the section is absent, so a `data:` mapping without it prepares as before).
        dir: the feedback layer (batches written by `feedback export`).
        min_labels: merge nothing unless the layer holds at least this many products.
        min_new_labels: `retrain` trains only when at least this many products arrived
            since the processed data was last prepared (`--force` overrides).
        max_share: feedback rows are at most this share of the merged training split
            (the newest are kept).
        holdout_share: share of the feedback products (seeded hash of the product) kept
            out of training to compare champion and challenger on recent production data.
    """

    enabled: bool = False
    dir: str = "data/feedback"
    min_labels: int = 20
    min_new_labels: int = 20
    max_share: float = 0.3
    holdout_share: float = 0.2

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any] | None) -> FeedbackParams:
        """Build from `data.feedback` (missing keys: defaults).

        Raises:
            ParamsError: an unknown key or a value of the wrong type or range.
        """
        if params is None:
            return cls()
        if not isinstance(params, Mapping):
            raise ParamsError(f"params 'data.feedback': expected a mapping, got {params!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ParamsError(
                f"params 'data.feedback': unknown key(s) {unknown}; expected some of "
                f"{sorted(known)}"
            )
        values: dict[str, Any] = {}
        for name, value in params.items():
            default = getattr(cls, name)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ParamsError(f"params 'data.feedback.{name}': expected true or false")
                values[name] = value
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ParamsError(
                        f"params 'data.feedback.{name}': expected an integer >= 0, got {value!r}"
                    )
                values[name] = value
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ParamsError(
                        f"params 'data.feedback.{name}': expected a number, got {value!r}"
                    )
                values[name] = float(value)
            else:
                values[name] = str(value)
        built = cls(**values)
        if not 0.0 < built.max_share < 1.0:
            raise ParamsError(f"params 'data.feedback.max_share': {built.max_share} not in (0, 1)")
        if not 0.0 <= built.holdout_share < 1.0:
            raise ParamsError(
                f"params 'data.feedback.holdout_share': {built.holdout_share} not in [0, 1)"
            )
        return built


# --------------------------------------------------------------------------------------
# Export: service database -> new batch
# --------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What `export_feedback` did."""

    feedback_dir: Path
    batch: Path | None
    rows: int
    last_feedback_id: int
    read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    role_filter: str = ""
    class_counts: dict[int, int] = field(default_factory=dict)
    images: int = 0
    note: str = ""

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        if self.batch is None:
            return f"no new batch in {self.feedback_dir}: {self.note}"
        lines = [
            f"wrote {self.rows:,} reviewed product(s) ({self.images:,} with an image) to "
            f"{self.batch} (feedback ids up to {self.last_feedback_id})",
            f"reviewers: {self.role_filter}",
        ]
        lines += [f"  dropped {n:,}: {why}" for why, n in sorted(self.dropped.items()) if n]
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(self.class_counts.items()))
        lines.append(f"classes: {counts}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["feedback_dir"] = str(self.feedback_dir)
        data["batch"] = str(self.batch) if self.batch else None
        data["class_counts"] = {str(k): v for k, v in self.class_counts.items()}
        return data


def export_feedback(
    database_url: str,
    feedback_dir: Path,
    *,
    roles: Sequence[str] = REVIEWER_ROLES,
    image_root: Path | None = None,
    now: datetime | None = None,
) -> ExportResult:
    """Write the feedback newer than the last batch into a new batch folder.

    Args:
        database_url: the service database (SQLAlchemy URL).
        feedback_dir: the feedback layer (created if needed).
        roles: roles whose corrections are trusted (when the database knows the roles).
        image_root: where relative `predictions.image_path` values are resolved (default:
            the current directory, as the service stores them).
        now: the batch time (tests).

    Raises:
        DataError: the database cannot be read or lacks the service tables.
    """
    feedback_dir = Path(feedback_dir)
    previous = list_batches(feedback_dir)
    source = feedback_source(database_url)
    # Feedback ids are the database's: a recreated database numbers from 1 again, so only
    # the batches of this database (or of before sources were recorded) set the watermark.
    watermark = max(
        (
            manifest.get("last_feedback_id", 0)
            for manifest in map(_read_manifest, previous)
            if manifest.get("source") in (None, source)
        ),
        default=0,
    )
    feedback_dir.mkdir(parents=True, exist_ok=True)
    rows, role_filter = read_reviewed_feedback(database_url, after_id=watermark, roles=roles)
    read = len(rows)
    if rows.empty:
        return ExportResult(
            feedback_dir=feedback_dir,
            batch=None,
            rows=0,
            last_feedback_id=watermark,
            role_filter=role_filter,
            note=f"no new reviewed feedback after feedback id {watermark}",
        )
    products, dropped = select_latest_corrections(rows)
    last_id = int(rows["feedback_id"].max())
    if products.empty:
        # Still a batch: it records that these feedback ids were seen (watermark moves on).
        logger.info("all %d new feedback rows were dropped", read)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    batch = feedback_dir / f"{BATCH_PREFIX}{stamp}"
    if batch.exists():
        raise DataError(f"feedback batch {batch} already exists; batches are never rewritten")
    staging = feedback_dir / f".{batch.name}.part"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        images = _write_batch(staging, products, image_root or Path())
        counts = count_classes(products[TARGET_COL])
        manifest = {
            "created_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "database": redact_database_url(database_url),
            "source": source,
            "first_feedback_id": int(rows["feedback_id"].min()),
            "last_feedback_id": last_id,
            "feedback_rows_read": read,
            "products": len(products),
            "images": images,
            "dropped": dropped,
            "role_filter": role_filter,
            "class_counts": {str(k): v for k, v in counts.items()},
            "files": {name: _sha256(staging / name) for name in (X_TRAIN_FILE, Y_TRAIN_FILE)},
        }
        (staging / BATCH_MANIFEST).write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        staging.rename(batch)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"cannot write the feedback batch {batch}: {exc}") from exc
    return ExportResult(
        feedback_dir=feedback_dir,
        batch=batch,
        rows=len(products),
        last_feedback_id=last_id,
        read=read,
        dropped=dropped,
        role_filter=role_filter,
        class_counts=counts,
        images=images,
    )


def feedback_source(database_url: str) -> str | None:
    """Which database the feedback comes from: the prediction id and time of its first
    feedback row (None without feedback). A recreated database numbers its feedback from 1
    again; this tells its batches from the old database's.

    Raises:
        DataError: the database cannot be opened or read.
    """
    import sqlalchemy as sa

    with _service_connection(database_url) as conn:
        if "feedback" not in sa.inspect(conn).get_table_names():
            return None
        feedback = sa.Table("feedback", sa.MetaData(), autoload_with=conn)
        first = conn.execute(
            sa.select(feedback.c.prediction_id, feedback.c.created_at)
            .order_by(feedback.c.id)
            .limit(1)
        ).first()
    return None if first is None else f"{first.prediction_id}@{first.created_at}"


@contextmanager
def _service_connection(database_url: str) -> Iterator[Any]:
    """A connection to the service database (which must exist when it is a SQLite file).

    Raises:
        DataError: the file is missing, the URL is invalid, or the database cannot be read.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from rakuten_mlops.db.session import make_engine

    path = sqlite_path(database_url)
    if path is not None and not path.is_file():
        raise DataError(
            f"service database not found: {path} (RAKUTEN_DATABASE_URL); "
            "start the service or run `rakuten-mlops db upgrade` first"
        )
    try:
        engine = make_engine(database_url)
    except (RakutenError, SQLAlchemyError, ValueError) as exc:
        raise DataError(
            f"invalid RAKUTEN_DATABASE_URL {redact_database_url(database_url)}: {exc}"
        ) from exc
    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise DataError(
            f"cannot read the service database {redact_database_url(database_url)}: {exc}"
        ) from exc
    finally:
        engine.dispose()


def read_reviewed_feedback(
    database_url: str, *, after_id: int = 0, roles: Sequence[str] = REVIEWER_ROLES
) -> tuple[pd.DataFrame, str]:
    """Feedback rows (id > `after_id`) joined with their prediction's stored input.

    Tables are reflected, not imported from the service code, so the export works on any
    migration level: a `username` column and a `users` table are used when they exist, and
    an `undone_at` column (corrections a reviewer took back) is honoured when present.

    Returns:
        The rows (columns `feedback_id`, `feedback_at`, `prediction_id`, `prdtypecode`,
        `designation`, `description`, `productid`, `imageid`, `image_path`, `trusted`)
        ordered by feedback id, and a sentence saying which reviewer rule applied.
        `trusted` is False for a row whose author is not a user with one of `roles`.

    Raises:
        DataError: the database cannot be opened or lacks `predictions` / `feedback`.
    """
    import sqlalchemy as sa

    with _service_connection(database_url) as conn:
        metadata = sa.MetaData()
        names = set(sa.inspect(conn).get_table_names())
        missing = {"predictions", "feedback"} - names
        if missing:
            raise DataError(
                f"{redact_database_url(database_url)}: no {', '.join(sorted(missing))} table; "
                "run `rakuten-mlops db upgrade` (the service creates them)"
            )
        predictions = sa.Table("predictions", metadata, autoload_with=conn)
        feedback = sa.Table("feedback", metadata, autoload_with=conn)
        p, f = predictions.c, feedback.c
        columns = [
            f.id.label("feedback_id"),
            f.created_at.label("feedback_at"),
            f.prediction_id.label("prediction_id"),
            f.prdtypecode.label("prdtypecode"),
            p.designation.label("designation"),
            p.description.label("description"),
            p.productid.label("productid"),
            p.imageid.label("imageid"),
            (p.image_path if "image_path" in p else sa.null()).label("image_path"),
        ]
        query = (
            sa.select(*columns)
            .select_from(feedback.join(predictions, f.prediction_id == p.id))
            .where(f.id > after_id)
            .order_by(f.id)
        )
        if "undone_at" in f:
            query = query.where(f.undone_at.is_(None))
        rule = (
            "no `users` table in the service database: every feedback row is accepted "
            "(before the security migration every caller is the built-in admin)"
        )
        trusted: Any = sa.true()
        if "users" in names and "username" in f:
            users = sa.Table("users", metadata, autoload_with=conn)
            if "username" in users.c and "role" in users.c:
                # Outer join: feedback of unknown users is read, then counted as dropped.
                query = query.outerjoin(users, users.c.username == f.username)
                trusted = sa.func.coalesce(users.c.role.in_(list(roles)), sa.false())
                rule = (
                    f"only users with role {' or '.join(roles)} (from the `users` table; "
                    "unknown usernames are not trusted, disabled reviewers still are)"
                )
        elif "users" in names:
            rule = "`feedback` has no `username` column: every feedback row is accepted"
        query = query.add_columns(trusted.label("trusted"))
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=_EXPORT_COLUMNS)
    return frame, rule


_EXPORT_COLUMNS = [
    "feedback_id",
    "feedback_at",
    "prediction_id",
    "prdtypecode",
    "designation",
    "description",
    "productid",
    "imageid",
    "image_path",
    "trusted",
]


def select_latest_corrections(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per product, its latest correction; rows that cannot be training data dropped.

    A product is its `productid` when the prediction had one, else its normalised text.
    Rows not `trusted` (when the column is there), with a code outside the 27 classes or
    without any text are dropped.

    Returns:
        The products (ordered by feedback id) and the dropped counts by reason.
    """
    from rakuten_mlops.features.text import normalize_for_dedup

    frame = rows.copy()
    frame["designation"] = frame["designation"].fillna("").astype(str)
    frame["description"] = frame["description"].fillna("").astype(str)
    dropped: dict[str, int] = {}
    if "trusted" in frame:
        trusted = frame["trusted"].fillna(False).astype(bool)
        dropped[UNTRUSTED] = int((~trusted).sum())
        frame = frame[trusted].copy()
    code = pd.to_numeric(frame[TARGET_COL], errors="coerce")
    bad_code = ~code.isin(PRODUCT_CODES)
    dropped["code outside the 27 classes"] = int(bad_code.sum())
    no_text = frame["designation"].str.strip().eq("") & frame["description"].str.strip().eq("")
    dropped["no title and no description"] = int((no_text & ~bad_code).sum())
    frame = frame[~bad_code & ~no_text].copy()
    frame[TARGET_COL] = pd.to_numeric(frame[TARGET_COL]).astype("int64")
    frame["product_key"] = [
        f"id:{_as_id(pid)}" if _as_id(pid) is not None else f"text:{normalize_for_dedup(d, s)}"
        for pid, d, s in zip(
            frame["productid"], frame["designation"], frame["description"], strict=True
        )
    ]
    before = len(frame)
    frame = frame.sort_values("feedback_id").drop_duplicates("product_key", keep="last")
    dropped["older correction of the same product"] = before - len(frame)
    return frame.reset_index(drop=True), dropped


def _write_batch(target: Path, products: pd.DataFrame, image_root: Path) -> int:
    """Write X, Y and the image copies of one batch into `target`; returns images copied."""
    images_dir = target / IMAGE_TRAIN_DIR
    images_dir.mkdir(parents=True)
    index = FEEDBACK_INDEX_BASE + products["feedback_id"].astype("int64")
    productid = [_as_id(p) or int(i) for p, i in zip(products["productid"], index, strict=True)]
    imageid = [_as_id(m) or int(i) for m, i in zip(products["imageid"], index, strict=True)]
    x = pd.DataFrame(
        {
            "designation": products["designation"].to_numpy(),
            "description": products["description"].to_numpy(),
            "productid": productid,
            "imageid": imageid,
        },
        index=pd.Index(index.to_numpy(), name=None),
    )
    x.to_csv(target / X_TRAIN_FILE)
    y = pd.DataFrame({TARGET_COL: products[TARGET_COL].to_numpy()}, index=x.index)
    y.to_csv(target / Y_TRAIN_FILE)
    copied = 0
    for stored, pid, iid in zip(products["image_path"], productid, imageid, strict=True):
        if not isinstance(stored, str) or not stored:
            continue
        source = Path(stored) if Path(stored).is_absolute() else image_root / stored
        if source.is_file():
            shutil.copyfile(source, images_dir / image_filename(iid, pid))
            copied += 1
    return copied


# --------------------------------------------------------------------------------------
# The layer: batches -> processed rows
# --------------------------------------------------------------------------------------


def list_batches(feedback_dir: Path) -> list[Path]:
    """The complete batches of the layer, oldest first (staging folders are ignored)."""
    feedback_dir = Path(feedback_dir)
    if not feedback_dir.is_dir():
        return []
    return sorted(
        p
        for p in feedback_dir.iterdir()
        if p.is_dir() and p.name.startswith(BATCH_PREFIX) and (p / BATCH_MANIFEST).is_file()
    )


def load_feedback_layer(feedback_dir: Path, batches: Iterable[str] | None = None) -> pd.DataFrame:
    """Every product of the layer in the processed contract, latest correction winning.

    `image_path` is absolute ("" without a usable image); an extra `batch` column names the
    batch each row comes from and `product_key` identifies the product.

    Args:
        batches: only these batch names (default: all).

    Raises:
        DataError: a batch is malformed.
    """
    from rakuten_mlops.data.processed import build_processed_frame, find_usable_images
    from rakuten_mlops.data.validate import load_labelled_products

    wanted = set(batches) if batches is not None else None
    frames = []
    for batch in list_batches(feedback_dir):
        if wanted is not None and batch.name not in wanted:
            continue
        if not (batch / X_TRAIN_FILE).is_file():
            raise DataError(f"feedback batch {batch} has no {X_TRAIN_FILE}")
        if _read_manifest(batch).get("products", 1) == 0:
            continue
        products = load_labelled_products(batch)
        frame = build_processed_frame(products, None, find_usable_images(batch, products))
        frame["text_origin"] = FEEDBACK_TEXT_ORIGIN
        frame["image_path"] = [
            str((batch / rel).resolve()) if rel else "" for rel in frame["image_path"]
        ]
        frame["batch"] = batch.name
        frames.append(frame)
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=object) for c in (*PROCESSED_COLUMNS, "batch", "product_key")}
        )
    layer = pd.concat(frames, ignore_index=True)
    # Products exported without an id got their index as id: they are keyed by text.
    synthetic = layer["productid"].to_numpy() == layer[INDEX_COL].to_numpy()
    layer["product_key"] = np.where(
        synthetic, "text:" + _text_keys(layer), "id:" + layer["productid"].astype(str)
    )
    return layer.drop_duplicates("product_key", keep="last").reset_index(drop=True)


def count_layer_products(feedback_dir: Path, exclude_batches: Iterable[str] = ()) -> int:
    """Products in the layer's batches not in `exclude_batches` (from the manifests)."""
    skip = set(exclude_batches)
    return sum(
        int(_read_manifest(b).get("products", 0))
        for b in list_batches(feedback_dir)
        if b.name not in skip
    )


# --------------------------------------------------------------------------------------
# Merge into the training split
# --------------------------------------------------------------------------------------


@dataclass
class FeedbackMerge:
    """What `merge_feedback` did: the report `data prepare` writes and prints."""

    enabled: bool
    batches: list[str] = field(default_factory=list)
    layer_products: int = 0
    merged: int = 0
    holdout: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    replaced_train_rows: int = 0
    train_before: int = 0
    train_after: int = 0
    feedback_share: float = 0.0
    class_balance: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        if not self.merged:
            return f"feedback: nothing merged ({self.note})"
        lines = [
            f"feedback: {self.merged:,} reviewed product(s) merged into train "
            f"({self.train_before:,} -> {self.train_after:,} rows, "
            f"{self.feedback_share:.1%} feedback; {self.holdout:,} held out; "
            f"{self.replaced_train_rows:,} train row(s) replaced by their correction)",
        ]
        lines += [f"  dropped {n:,}: {why}" for why, n in sorted(self.dropped.items()) if n]
        movers = sorted(self.class_balance, key=lambda c: -abs(c["share_change"]))[:5]
        lines.append(
            "  class share moves: "
            + ", ".join(f"{c['code']} {c['share_change']:+.1%}" for c in movers)
        )
        return "\n".join(lines)


def merge_feedback(
    frames: Mapping[str, pd.DataFrame],
    layer: pd.DataFrame,
    params: FeedbackParams,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, FeedbackMerge]:
    """Add the feedback layer to the training split; every other split is left untouched.

    Guard rails, in order: products also in the validation or test split (same normalised
    text or product id) are dropped, so evaluation never sees a product trained on; a
    seeded `holdout_share` of the products is kept apart (the recent-feedback set); nothing
    is merged below `min_labels` products; at most `max_share` of the merged training split
    is feedback (newest first); a training row of the same product is replaced by its
    correction.

    Args:
        frames: the processed splits (`train`, `val`, `test`, ...).
        layer: `load_feedback_layer` output (latest correction per product, oldest first).
        params: the `data.feedback` parameters.
        seed: the split seed (the holdout depends on it and on the product only).

    Returns:
        The splits (only `train` changed), the holdout rows (processed columns, absolute
        image paths) and the report.
    """
    out = dict(frames)
    report = FeedbackMerge(
        enabled=params.enabled,
        batches=sorted(set(layer["batch"])) if "batch" in layer else [],
        layer_products=len(layer),
        train_before=len(frames["train"]),
        train_after=len(frames["train"]),
    )
    empty = layer.iloc[0:0][list(PROCESSED_COLUMNS)]
    if not params.enabled:
        report.note = "data.feedback.enabled is false"
        return out, empty, report
    if layer.empty:
        report.note = "the feedback layer is empty"
        return out, empty, report

    fb = layer.copy()
    fb_text = _text_keys(fb)
    evaluated = pd.concat([frames[s] for s in ("val", "test") if s in frames], ignore_index=True)
    leak = fb_text.isin(set(_text_keys(evaluated))) | fb["productid"].isin(
        set(evaluated["productid"])
    )
    report.dropped["also in the val or test split"] = int(leak.sum())
    fb, fb_text = fb[~leak.to_numpy()], fb_text[~leak.to_numpy()]

    hold = np.array([_unit_hash(seed, key) < params.holdout_share for key in fb["product_key"]])
    holdout = fb[hold][list(PROCESSED_COLUMNS)].reset_index(drop=True)
    report.holdout = len(holdout)
    fb, fb_text = fb[~hold], fb_text[~hold]

    if len(fb) < max(params.min_labels, 1):
        report.note = (
            f"{len(fb)} usable feedback product(s), fewer than data.feedback.min_labels "
            f"({params.min_labels})"
        )
        return out, holdout, report

    train = frames["train"]
    same = _text_keys(train).isin(set(fb_text)) | train["productid"].isin(set(fb["productid"]))
    base = train[~same.to_numpy()]
    cap = math.floor(params.max_share / (1.0 - params.max_share) * len(base))
    if len(fb) > cap:
        report.dropped[f"over the {params.max_share:.0%} cap (oldest first)"] = len(fb) - cap
        fb = fb.iloc[len(fb) - cap :] if cap else fb.iloc[0:0]
    # Only replace the training rows whose correction is actually merged.
    same = _text_keys(train).isin(set(_text_keys(fb))) | train["productid"].isin(
        set(fb["productid"])
    )
    base = train[~same.to_numpy()]
    merged = pd.concat([base, fb[list(PROCESSED_COLUMNS)]], ignore_index=True)
    out["train"] = merged.astype(train.dtypes.to_dict())
    report.merged = len(fb)
    report.replaced_train_rows = int(same.sum())
    report.train_after = len(merged)
    report.feedback_share = len(fb) / len(merged) if len(merged) else 0.0
    report.class_balance = class_balance_change(train[TARGET_COL], merged[TARGET_COL])
    return out, holdout, report


def count_classes(labels: pd.Series) -> dict[int, int]:
    """Rows per class code, sorted by code."""
    counts = labels.value_counts().sort_index()
    return {
        int(code): int(n)
        for code, n in zip(counts.index.to_numpy(dtype="int64"), counts.to_numpy(), strict=True)
    }


def class_balance_change(before: pd.Series, after: pd.Series) -> list[dict[str, Any]]:
    """Per class: counts and shares before / after, and the change of share."""
    b, a = before.value_counts(), after.value_counts()
    rows = []
    for code in sorted(set(b.index) | set(a.index)):
        nb, na = int(b.get(code, 0)), int(a.get(code, 0))
        sb = nb / len(before) if len(before) else 0.0
        sa = na / len(after) if len(after) else 0.0
        rows.append(
            {
                "code": int(code),
                "before": nb,
                "after": na,
                "share_before": round(sb, 6),
                "share_after": round(sa, 6),
                "share_change": round(sa - sb, 6),
            }
        )
    return rows


def processed_image_path(absolute: str, raw_dir: Path) -> str:
    """A feedback image path as stored in the processed layer: relative to the raw dir."""
    if not absolute:
        return ""
    import os

    return PurePosixPath(Path(os.path.relpath(absolute, Path(raw_dir).resolve()))).as_posix()


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path not in ("", ":memory:") else None


def _text_keys(frame: pd.DataFrame) -> pd.Series:
    from rakuten_mlops.features.text import normalize_for_dedup

    keys = [
        normalize_for_dedup(str(d or ""), str(s or ""))
        for d, s in zip(frame["designation"], frame["description"], strict=True)
    ]
    series = pd.Series(keys, index=frame.index, dtype=object)
    # An empty key matches nothing (it is not a product identity).
    return series.where(series.ne(""), "#" + frame[INDEX_COL].astype(str))


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00holdout\x00{key}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big") / float(1 << 56)


def _as_id(value: object) -> int | None:
    """A product / image id as a positive int (the service stores them as text), else None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        return int(value) if not math.isnan(value) and value.is_integer() and value > 0 else None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def _read_manifest(batch: Path) -> dict[str, Any]:
    try:
        data = json.loads((batch / BATCH_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"unreadable feedback batch manifest {batch / BATCH_MANIFEST}: {exc}"
        ) from exc
    return data if isinstance(data, dict) else {}


def _sha256(path: Path) -> str:
    from rakuten_mlops.data.manifest import sha256_file

    return sha256_file(path)
