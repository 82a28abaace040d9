"""`feedback export`: the corrections of the service database into a new feedback batch.

`export_feedback` reads the prediction service's database (tables `predictions` and
`feedback`, see `db/models.py`) and writes the products reviewers corrected into a new
batch folder of the feedback layer (`data/feedback.py` describes the layout). A batch is
never rewritten: the next export only takes feedback rows with a larger id than the last
batch's `last_feedback_id` (nothing new, no batch).

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
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from rakuten_mlops.data.feedback import (
    BATCH_MANIFEST,
    BATCH_PREFIX,
    count_classes,
    list_batches,
    read_manifest,
)
from rakuten_mlops.data.manifest import sha256_file
from rakuten_mlops.db.session import redact_database_url, sqlite_path
from rakuten_mlops.errors import DataError, RakutenError
from rakuten_mlops.schema import (
    IMAGE_TRAIN_DIR,
    PRODUCT_CODES,
    TARGET_COL,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    as_id,
    image_filename,
)

logger = logging.getLogger(__name__)

# Feedback rows get indexes (and, when the prediction had none, product / image ids) far
# above the official ones (< 100,000), derived from the feedback id: stable across exports.
FEEDBACK_INDEX_BASE = 1_000_000_000
REVIEWER_ROLES = ("reviewer", "admin")
UNTRUSTED = "not from a reviewer or admin (unknown user or other role)"


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
            for manifest in map(read_manifest, previous)
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
            "files": {name: sha256_file(staging / name) for name in (X_TRAIN_FILE, Y_TRAIN_FILE)},
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
    an `undone_at` column (corrections a reviewer took back) is honoured when present, and
    blind second reviews (`kind` "second") are left out: labels come from first reviews and
    from the admins' settling of disagreements.

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
        if "kind" in f:
            # A blind second review checks a label, it is not one: when it disagrees, the
            # first reviewer's code stays the label until an admin settles (kind "settle").
            query = query.where(f.kind != "second")
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
        f"id:{as_id(pid)}" if as_id(pid) is not None else f"text:{normalize_for_dedup(d, s)}"
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
    productid = [as_id(p) or int(i) for p, i in zip(products["productid"], index, strict=True)]
    imageid = [as_id(m) or int(i) for m, i in zip(products["imageid"], index, strict=True)]
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
