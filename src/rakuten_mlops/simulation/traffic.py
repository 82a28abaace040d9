"""Replay labelled products against the running service, as catalogue tools and reviewers would.

`load_traffic` reads the products (the processed `unseen` split, or any CSV in the official
X layout with an optional Y file of true codes); `apply_drift` changes them the way a real
feed drifts (a category surge, titles in capitals, descriptions or images missing);
`simulate_traffic` sends them one by one to `POST /v1/predict` (multipart, with the image
file when there is one) at a fixed rate, bounded in count and time, and sends the true code
to `POST /v1/feedback` for a share of them. Only the one configured service URL is called.

Every request carries the API key (`RAKUTEN_SERVICE_API_KEY`) as `X-API-Key`; feedback
needs a key of a reviewer (or admin). The service limits predictions per user or key
(`RAKUTEN_RATE_LIMIT_PREDICT`, 10/minute by default): a 429 answer is waited out politely
(its `Retry-After`, at most `MAX_RETRY_WAIT_S` a time, never past `max_seconds`) and the
same request is sent again; the waits are counted in the summary (`rate_limited`,
`rate_limited_wait_s`). A simulation faster than the limit is paced by it: give the
simulation its own key and raise the limit for the run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.errors import DataError, RakutenError
from rakuten_mlops.schema import TARGET_COL

logger = logging.getLogger(__name__)

DRIFTS = ("category-surge", "capitals", "no-images", "no-description", "new-merchant")
# Words of the title a new merchant keeps after its own reference (`new-merchant`).
MERCHANT_TITLE_WORDS = 3
PREDICT_PATH = "/v1/predict"
FEEDBACK_PATH = "/v1/feedback"
TRAFFIC_COLUMNS = ("designation", "description", "productid", "imageid", "image_path", TARGET_COL)
MAX_RETRY_WAIT_S = 60.0  # the longest single wait on a 429 (Retry-After is capped to it)
DEFAULT_RETRY_WAIT_S = 1.0  # a 429 without a usable Retry-After


@dataclass
class TrafficSummary:
    """What a simulation sent and got back."""

    url: str
    drift: list[str]
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    with_image: int = 0
    labelled: int = 0
    correct: int = 0
    feedback_sent: int = 0
    feedback_ok: int = 0
    duration_s: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    versions: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    rate_limited_wait_s: float = 0.0
    stopped_by: str = ""
    first_error: str | None = None

    @property
    def accuracy(self) -> float | None:
        """Share of labelled, answered products predicted right."""
        return self.correct / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "accuracy": self.accuracy}

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        rate = self.sent / self.duration_s if self.duration_s else 0.0
        accuracy = f"{self.accuracy:.3f}" if self.accuracy is not None else "n/a"
        lines = [
            f"sent {self.sent} product(s) to {self.url} in {self.duration_s:.1f} s "
            f"({rate:.1f}/s, stopped by {self.stopped_by}); drift: "
            f"{', '.join(self.drift) or 'none'}",
            f"answers: {self.ok} ok, {self.errors} errors {dict(sorted(self.statuses.items()))}; "
            f"{self.with_image} with an image; latency p50 {self.latency_ms_p50} ms, "
            f"p95 {self.latency_ms_p95} ms",
            f"accuracy on labelled answers: {accuracy} ({self.correct}/{self.labelled}); "
            f"feedback sent {self.feedback_sent} ({self.feedback_ok} stored)",
            f"model versions answering: {self.versions}",
        ]
        if self.rate_limited:
            lines.append(
                f"rate limited {self.rate_limited} time(s) (429), waited "
                f"{self.rate_limited_wait_s:.1f} s in all and sent again; to go faster, give "
                "the simulation its own API key and raise RAKUTEN_RATE_LIMIT_PREDICT"
            )
        if self.first_error:
            lines.append(f"first error: {self.first_error}")
        return "\n".join(lines)


def load_traffic(
    processed_dir: Path | None = None,
    *,
    input_csv: Path | None = None,
    labels_csv: Path | None = None,
    images_dir: Path | None = None,
    split: str = "unseen",
) -> pd.DataFrame:
    """The products to replay (`TRAFFIC_COLUMNS`; `prdtypecode` is <NA> when unknown).

    Args:
        processed_dir: read the processed `split` (default `unseen`) when no CSV is given.
        input_csv: a CSV in the official X layout.
        labels_csv: its true codes (official Y layout), needed to send feedback.
        images_dir: where the CSV's images are (official file names).

    Raises:
        DataError: the source is missing, empty or lacks `designation`.
    """
    from rakuten_mlops.schema import image_filename

    if input_csv is None:
        if processed_dir is None:
            raise DataError("no traffic source: give --input X.csv or a processed directory")
        from rakuten_mlops.data.prepare import load_split

        frame = load_split(processed_dir, split)
        frame = frame.loc[:, list(TRAFFIC_COLUMNS)].copy()
    else:
        if not input_csv.is_file():
            raise DataError(f"input file not found: {input_csv}")
        x = pd.read_csv(input_csv, index_col=0, keep_default_na=False, na_values=[""])
        if "designation" not in x.columns:
            raise DataError(f"{input_csv}: missing required column `designation`")
        frame = pd.DataFrame(index=x.index)
        for column in ("designation", "description"):
            frame[column] = x[column].fillna("").astype(str) if column in x else ""
        for column in ("productid", "imageid"):
            frame[column] = pd.to_numeric(x[column], errors="coerce") if column in x else np.nan
        frame["image_path"] = ""
        if images_dir is not None:
            frame["image_path"] = [
                str(images_dir / image_filename(int(i), int(p)))
                if pd.notna(i)
                and pd.notna(p)
                and (images_dir / image_filename(int(i), int(p))).is_file()
                else ""
                for i, p in zip(frame["imageid"], frame["productid"], strict=True)
            ]
        frame[TARGET_COL] = pd.array([pd.NA] * len(frame), dtype="Int64")
        if labels_csv is not None:
            if not labels_csv.is_file():
                raise DataError(f"labels file not found: {labels_csv}")
            y = pd.read_csv(labels_csv, index_col=0)
            if TARGET_COL not in y.columns:
                raise DataError(f"{labels_csv}: missing column `{TARGET_COL}`")
            frame[TARGET_COL] = y[TARGET_COL].reindex(frame.index).astype("Int64")
        frame = frame.reset_index(drop=True)
    if frame.empty:
        raise DataError("no products to replay (the source is empty)")
    frame[TARGET_COL] = frame[TARGET_COL].astype("Int64")
    return frame.reset_index(drop=True)


def apply_drift(
    frame: pd.DataFrame,
    drifts: Sequence[str],
    *,
    size: int,
    seed: int = 0,
    surge_code: int | None = None,
    surge_share: float = 0.6,
) -> pd.DataFrame:
    """`size` products drawn from `frame` (shuffled, cycled), then drifted.

    Drifts: `category-surge` (a `surge_share` of the products come from one class,
    `surge_code` or the most frequent labelled one), `capitals` (titles in capitals),
    `no-images`, `no-description`, `new-merchant` (a merchant the model has never seen: its
    titles are its own category reference, such as `MK-3FA1`, then the first three words of
    the title, without description; the reference is the same for all its products of a
    class, so reviewed products teach it, which the fixed test split cannot show).

    Raises:
        DataError: an unknown drift, or a surge or a new merchant without labels.
    """
    unknown = sorted(set(drifts) - set(DRIFTS))
    if unknown:
        raise DataError(f"unknown drift(s) {unknown}; expected some of {list(DRIFTS)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    picks = np.resize(order, size)  # cycle when more products are asked than there are
    if "category-surge" in drifts:
        labelled = frame[TARGET_COL].dropna()
        if labelled.empty:
            raise DataError("category-surge needs labelled products (give --labels)")
        code = (
            int(surge_code)
            if surge_code is not None
            else int(labelled.astype("int64").value_counts().index[0])
        )
        members = np.flatnonzero(frame[TARGET_COL].fillna(-1).to_numpy() == code)
        if members.size == 0:
            raise DataError(f"category-surge: no product of class {code} in the source")
        surge = rng.random(size) < surge_share
        picks = np.where(surge, rng.choice(members, size=size), picks)
    out = frame.iloc[picks].reset_index(drop=True).copy()
    if "capitals" in drifts:
        out["designation"] = out["designation"].astype(str).str.upper()
    if "new-merchant" in drifts:
        if out[TARGET_COL].isna().any():
            raise DataError("new-merchant needs labelled products (give --labels)")
        words = out["designation"].astype(str).str.split().str[:MERCHANT_TITLE_WORDS]
        out["designation"] = [
            f"{merchant_reference(int(code))} {' '.join(title)}"
            for code, title in zip(out[TARGET_COL], words, strict=True)
        ]
        out["description"] = ""
    if "no-description" in drifts:
        out["description"] = ""
    if "no-images" in drifts:
        out["image_path"] = ""
    return out


def merchant_reference(code: int) -> str:
    """The `new-merchant` drift's own reference for a product type (stable, like `MK-3FA1`)."""
    digest = hashlib.blake2b(f"merchant\x00{code}".encode(), digest_size=2).hexdigest()
    return f"MK-{digest.upper()}"


def simulate_traffic(
    products: pd.DataFrame,
    service_url: str,
    *,
    rate: float,
    max_seconds: float,
    feedback_share: float = 0.0,
    api_key: str | None = None,
    drift: Sequence[str] = (),
    seed: int = 0,
    timeout_s: float = 30.0,
    transport: Any = None,
) -> TrafficSummary:
    """Send every product of `products` (in order) to the service, at `rate` per second.

    Stops after the last product or `max_seconds`, whichever comes first. For a seeded
    `feedback_share` of the labelled, answered products, the true code goes to
    `/v1/feedback`. A 429 (rate limit) is waited out (`Retry-After`) and the request sent
    again; the schedule then resumes from there. Errors are counted, never raised (a
    simulation reports what happened).

    Raises:
        RakutenError: the URL is not http(s) or the rate is not positive.
    """
    import httpx

    if not service_url.startswith(("http://", "https://")):
        raise RakutenError(f"service URL must be http(s)://..., got {service_url!r}")
    if rate <= 0:
        raise RakutenError(f"--rate must be > 0, got {rate}")
    summary = TrafficSummary(url=service_url, drift=list(drift))
    headers = {"X-API-Key": api_key} if api_key else {}
    statuses: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    latencies: list[float] = []
    started = time.monotonic()
    summary.stopped_by = "limit"
    deadline = started + max_seconds
    with httpx.Client(
        base_url=service_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
    ) as client:
        try:
            _send_all(
                client,
                products,
                summary,
                statuses,
                versions,
                latencies,
                started,
                rate=rate,
                max_seconds=max_seconds,
                feedback_share=feedback_share,
                seed=seed,
                deadline=deadline,
            )
        except KeyboardInterrupt:  # Ctrl+C / SIGINT: stop and report what was sent
            summary.stopped_by = "interrupt"
    summary.duration_s = round(time.monotonic() - started, 3)
    summary.statuses = dict(statuses)
    summary.versions = dict(versions)
    if latencies:
        summary.latency_ms_p50 = round(float(np.percentile(latencies, 50)), 1)
        summary.latency_ms_p95 = round(float(np.percentile(latencies, 95)), 1)
    return summary


def _send_all(
    client: Any,
    products: pd.DataFrame,
    summary: TrafficSummary,
    statuses: Counter[str],
    versions: Counter[str],
    latencies: list[float],
    started: float,
    *,
    rate: float,
    max_seconds: float,
    feedback_share: float,
    seed: int,
    deadline: float,
) -> None:
    # The schedule's origin: moved forward by every 429 wait, so that the products after
    # a wait keep the asked rate instead of rushing to catch up (and hitting the limit).
    origin = started
    for position, row in enumerate(products.itertuples(index=False)):
        due = origin + position / rate
        now = time.monotonic()
        if due > deadline or now > deadline:
            summary.stopped_by = "time"
            break
        if due > now:
            time.sleep(due - now)
        summary.sent += 1
        waited = summary.rate_limited_wait_s
        answer, latency_ms = _predict_politely(client, row, summary, deadline)
        origin += summary.rate_limited_wait_s - waited
        latencies.append(latency_ms)
        status = answer.get("_status", "error")
        statuses[str(status)] += 1
        if "prediction_id" not in answer:
            summary.errors += 1
            summary.first_error = summary.first_error or str(answer.get("_error"))[:300]
            continue
        summary.ok += 1
        versions[_answer_version(answer)] += 1
        truth = _as_code(row.prdtypecode)
        if truth is None:
            continue
        summary.labelled += 1
        summary.correct += int(int(answer.get("prdtypecode", -1)) == truth)
        if _selected(seed, str(answer["prediction_id"]), feedback_share):
            summary.feedback_sent += 1
            summary.feedback_ok += _send_feedback(
                client, answer["prediction_id"], truth, summary, deadline
            )


def _predict_politely(
    client: Any, row: Any, summary: TrafficSummary, deadline: float
) -> tuple[dict[str, Any], float]:
    """`_predict`, sent again after each 429's `Retry-After` while the deadline allows.

    Returns the last answer and its latency (ms, without the waits).
    """
    counted_image = False
    while True:
        tick = time.perf_counter()
        answer = _predict(client, row, summary, count_image=not counted_image)
        latency_ms = (time.perf_counter() - tick) * 1000
        counted_image = True
        if answer.get("_status") != 429 or not _wait_out(answer, summary, deadline):
            return answer, latency_ms


def _wait_out(answer: dict[str, Any], summary: TrafficSummary, deadline: float) -> bool:
    """Sleep the `Retry-After` of a 429 answer; False (no wait) when past the deadline."""
    wait = min(_retry_after_s(answer.get("_retry_after")), MAX_RETRY_WAIT_S)
    if time.monotonic() + wait > deadline:
        return False
    summary.rate_limited += 1
    summary.rate_limited_wait_s = round(summary.rate_limited_wait_s + wait, 3)
    logger.info("rate limited (429): waiting %.1f s before sending again", wait)
    time.sleep(wait)
    return True


def _retry_after_s(value: Any) -> float:
    """Seconds of a `Retry-After` header (delay-seconds form; anything else: 1 s)."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return DEFAULT_RETRY_WAIT_S
    return seconds if math.isfinite(seconds) and seconds >= 0 else DEFAULT_RETRY_WAIT_S


def _predict(
    client: Any, row: Any, summary: TrafficSummary, *, count_image: bool = True
) -> dict[str, Any]:
    import httpx

    data = {"designation": str(row.designation), "description": str(row.description or "")}
    for name in ("productid", "imageid"):
        value = getattr(row, name)
        if value is not None and not pd.isna(value):
            data[name] = str(int(value))
    # Always multipart (the service's contract), with or without an image: plain fields
    # are parts without a file name.
    parts: list[tuple[str, tuple[str | None, Any, str | None]]] = [
        (name, (None, value, None)) for name, value in data.items()
    ]
    image_path = str(row.image_path or "")
    if image_path and Path(image_path).is_file():
        parts.append(
            ("image", (Path(image_path).name, Path(image_path).read_bytes(), "image/jpeg"))
        )
        summary.with_image += int(count_image)
    try:
        response = client.post(PREDICT_PATH, files=parts)
    except httpx.HTTPError as exc:
        return {"_status": "connection", "_error": f"{type(exc).__name__}: {exc}"}
    if response.status_code >= 300:
        return {
            "_status": response.status_code,
            "_error": response.text,
            "_retry_after": response.headers.get("Retry-After"),
        }
    try:
        body = response.json()
    except ValueError:
        return {"_status": response.status_code, "_error": "not JSON: " + response.text[:200]}
    return {"_status": response.status_code, **body} if isinstance(body, dict) else {}


def _send_feedback(
    client: Any, prediction_id: Any, code: int, summary: TrafficSummary, deadline: float
) -> int:
    import httpx

    while True:
        try:
            response = client.post(
                FEEDBACK_PATH, json={"prediction_id": prediction_id, "prdtypecode": code}
            )
        except httpx.HTTPError as exc:
            logger.warning("feedback for %s failed: %s", prediction_id, exc)
            return 0
        limited = {"_retry_after": response.headers.get("Retry-After")}
        if response.status_code != 429 or not _wait_out(limited, summary, deadline):
            break
    if response.status_code >= 300:
        logger.warning("feedback for %s refused: %s", prediction_id, response.text[:200])
        return 0
    return 1


def _answer_version(answer: dict[str, Any]) -> str:
    """The model version of a `/v1/predict` answer (`model.version`)."""
    model = answer.get("model")
    if isinstance(model, dict) and model.get("version") is not None:
        return str(model["version"])
    return str(answer.get("model_version", "?"))


def _as_code(value: Any) -> int | None:
    if value is None or pd.isna(value):
        return None
    return int(value)


def _selected(seed: int, key: str, share: float) -> bool:
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big") / float(1 << 56) < share
