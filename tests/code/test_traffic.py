"""`simulate traffic`: products, drifts, rate and time bounds, feedback share."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from factories import make_products
from rakuten_mlops.errors import DataError, RakutenError
from rakuten_mlops.simulation.traffic import (
    apply_drift,
    load_traffic,
    merchant_reference,
    simulate_traffic,
)


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    frame = make_products(8, seed=3, image_dir=tmp_path_factory.mktemp("img"), label_noise=0.0)
    return frame.loc[
        :, ["designation", "description", "productid", "imageid", "image_path", "prdtypecode"]
    ].astype({"prdtypecode": "Int64"})


class FakeService:
    """Answers like the service: every product is predicted as class 10."""

    def __init__(self, fail_every: int = 0) -> None:
        self.predictions: list[dict[str, str]] = []
        self.images = 0
        self.feedback: list[dict[str, int | str]] = []
        self.keys: set[str | None] = set()
        self.fail_every = fail_every

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.keys.add(request.headers.get("X-API-Key"))
        if request.url.path == "/v1/predict":
            body = request.read()
            n = len(self.predictions) + 1
            if self.fail_every and n % self.fail_every == 0:
                self.predictions.append({})
                return httpx.Response(503, json={"detail": "model not loaded"})
            fields = _multipart_fields(request.headers["content-type"], body)
            self.images += int("image" in fields)
            self.predictions.append(fields)
            return httpx.Response(
                200, json={"prediction_id": f"p{n}", "prdtypecode": 10, "model": {"version": "3"}}
            )
        if request.url.path == "/v1/feedback":
            self.feedback.append(json.loads(request.read()))
            return httpx.Response(201, json={"id": len(self.feedback)})
        return httpx.Response(404)


def _multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    boundary = content_type.split("boundary=")[1].encode()
    fields = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        fields[name] = value.rstrip(b"\r\n").decode("utf-8", errors="replace")
    return fields


def test_replays_products_with_images_and_feedback_for_a_share(products: pd.DataFrame) -> None:
    fake = FakeService()
    drifted = apply_drift(products, [], size=len(products), seed=1)
    summary = simulate_traffic(
        drifted,
        "http://127.0.0.1:9",
        rate=1000,
        max_seconds=30,
        feedback_share=0.5,
        api_key="k",
        transport=httpx.MockTransport(fake),
    )
    assert summary.sent == summary.ok == len(products) == 40
    assert summary.with_image == fake.images == int(products["image_path"].ne("").sum())
    assert summary.labelled == 40 and summary.correct == int((products.prdtypecode == 10).sum())
    assert 10 <= summary.feedback_sent <= 30 and summary.feedback_ok == summary.feedback_sent
    truth = {f"p{i + 1}": int(code) for i, code in enumerate(drifted["prdtypecode"])}
    assert all(f["prdtypecode"] == truth[str(f["prediction_id"])] for f in fake.feedback)
    assert fake.keys == {"k"} and summary.versions == {"3": 40}
    sent = fake.predictions[0]
    assert sent["designation"] == drifted["designation"][0]
    assert sent["productid"] == str(drifted["productid"][0])


def test_drifts_change_the_products_as_described(products: pd.DataFrame) -> None:
    surge = apply_drift(products, ["category-surge"], size=400, seed=2, surge_code=2583)
    assert 0.6 < (surge["prdtypecode"] == 2583).mean() < 0.8  # 60 % surge + its normal 20 %
    feed = apply_drift(products, ["capitals", "no-images", "no-description"], size=50, seed=2)
    assert (feed["designation"] == feed["designation"].str.upper()).all()
    assert feed["image_path"].eq("").all() and feed["description"].eq("").all()
    assert len(feed) == 50  # cycled past the 40 products
    with pytest.raises(DataError, match="unknown drift"):
        apply_drift(products, ["typos"], size=5)


def test_a_new_merchant_sends_its_own_reference_per_class(products: pd.DataFrame) -> None:
    merchant = apply_drift(products, ["new-merchant"], size=40, seed=1)
    references = merchant["designation"].str.split().str[0]
    assert references.str.fullmatch(r"MK-[0-9A-F]{4}").all()
    # One reference per class, different across classes, then at most three title words.
    by_class = references.groupby(merchant["prdtypecode"]).nunique()
    assert (by_class == 1).all()
    assert references.nunique() == merchant["prdtypecode"].nunique()
    assert merchant["designation"].str.split().str.len().le(4).all()
    assert merchant["description"].eq("").all()
    assert merchant_reference(2583) == merchant_reference(2583) != merchant_reference(10)
    with pytest.raises(DataError, match="new-merchant needs labelled products"):
        apply_drift(products.assign(prdtypecode=pd.NA), ["new-merchant"], size=5)


def test_bounded_by_time_and_errors_are_counted(products: pd.DataFrame) -> None:
    fake = FakeService(fail_every=3)
    started = time.monotonic()
    summary = simulate_traffic(
        products,
        "http://127.0.0.1:9",
        rate=20,
        max_seconds=0.5,
        transport=httpx.MockTransport(fake),
    )
    assert time.monotonic() - started < 2.0
    assert summary.stopped_by == "time" and 5 <= summary.sent <= 12
    assert summary.errors == summary.sent // 3 and summary.statuses.get("503") == summary.errors
    assert "model not loaded" in (summary.first_error or "")
    with pytest.raises(RakutenError, match="http"):
        simulate_traffic(products, "file:///etc/passwd", rate=1, max_seconds=1)


def test_load_traffic_from_csv_with_labels_and_images(tmp_path: Path) -> None:
    frame = make_products(2, seed=4, image_dir=tmp_path, label_noise=0.0).set_index("index")
    frame[["designation", "description", "productid", "imageid"]].to_csv(tmp_path / "X.csv")
    frame[["prdtypecode"]].to_csv(tmp_path / "Y.csv")
    loaded = load_traffic(
        input_csv=tmp_path / "X.csv", labels_csv=tmp_path / "Y.csv", images_dir=tmp_path
    )
    assert loaded["prdtypecode"].tolist() == frame["prdtypecode"].tolist()
    assert loaded["image_path"].ne("").sum() == frame["image_path"].ne("").sum() == 5
    unlabelled = load_traffic(input_csv=tmp_path / "X.csv")
    assert unlabelled["prdtypecode"].isna().all()
    with pytest.raises(DataError, match="not found"):
        load_traffic(input_csv=tmp_path / "missing.csv")


def test_check_input_accepts_what_predict_reads_and_names_what_is_wrong(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rakuten_mlops.cli import app

    good = tmp_path / "good.csv"
    good.write_text(",designation,description\n1,Tente 4 places,\n2,,\n", encoding="utf-8")
    ok = CliRunner().invoke(app, ["data", "check-input", "--input", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "2 row(s) ready to predict; 1 without any text" in ok.output
    cases = {
        "title,price\nTente,12\n": "missing required column `designation`",
        ",designation\n": "no product rows",
        ",designation\n1,Tente\n2,Lampe,12,rouge\n": "cannot read the rows after row 0",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(app, ["data", "check-input", "--input", str(bad)])
        assert result.exit_code == 1 and message in result.output, (text, result.output)
    ids = CliRunner().invoke(app, ["data", "check-input", "--input", str(good), "--need-image-ids"])
    assert ids.exit_code == 1 and "`productid`" in ids.output


def test_an_interrupt_stops_the_replay_and_still_reports(products: pd.DataFrame) -> None:
    fake = FakeService()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(fake.predictions) == 3:
            raise KeyboardInterrupt  # Ctrl+C while a request is in flight
        return fake(request)

    summary = simulate_traffic(
        products, "http://127.0.0.1:9", rate=1000, max_seconds=30,
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    assert summary.stopped_by == "interrupt"
    assert summary.sent == 4 and summary.ok == 3


class RateLimitedService(FakeService):
    """The fake service behind a rate limit: chosen attempts get a 429 with `Retry-After`."""

    def __init__(self, refuse: set[int], retry_after: str) -> None:
        super().__init__()
        self.refuse = refuse
        self.retry_after = retry_after
        self.attempts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts in self.refuse:
            return httpx.Response(
                429,
                json={"detail": "rate limit exceeded: 10/minute for predict"},
                headers={"Retry-After": self.retry_after},
            )
        return super().__call__(request)


def test_a_rate_limit_is_waited_out_and_the_request_sent_again(products: pd.DataFrame) -> None:
    # Attempt 2 is the first product's feedback (share 1.0); 4 and 5 are the second
    # product's prediction, refused twice in a row.
    fake = RateLimitedService(refuse={2, 4, 5}, retry_after="0.2")
    started = time.monotonic()
    summary = simulate_traffic(
        products.head(3), "http://127.0.0.1:9", rate=1000, max_seconds=30,
        feedback_share=1.0, api_key="sim-key", transport=httpx.MockTransport(fake),
    )  # fmt: skip
    assert time.monotonic() - started >= 0.6  # three polite waits of 0.2 s
    assert summary.sent == summary.ok == 3 and summary.errors == 0
    assert summary.statuses == {"200": 3}  # the final answers only
    assert len(fake.predictions) == 3 and summary.feedback_ok == summary.feedback_sent == 3
    assert summary.rate_limited == 3 and summary.rate_limited_wait_s == pytest.approx(0.6)
    assert summary.with_image == fake.images  # a retried image is counted once
    assert fake.keys == {"sim-key"}
    assert "rate limited 3 time(s) (429)" in summary.summary()
    assert "RAKUTEN_RATE_LIMIT_PREDICT" in summary.summary()


def test_a_rate_limit_past_the_time_bound_is_an_error_not_a_wait(products: pd.DataFrame) -> None:
    fake = RateLimitedService(refuse={1}, retry_after="60")
    started = time.monotonic()
    summary = simulate_traffic(
        products.head(2), "http://127.0.0.1:9", rate=1000, max_seconds=2,
        transport=httpx.MockTransport(fake),
    )  # fmt: skip
    assert time.monotonic() - started < 1.5
    assert summary.sent == 2 and summary.ok == 1 and summary.errors == 1
    assert summary.statuses == {"429": 1, "200": 1} and summary.rate_limited == 0
    assert "rate limit exceeded" in (summary.first_error or "")
