"""Champion / challenger: sticky split, shadow predictions, and the A/B report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rakuten_mlops.cli import app as cli_app
from rakuten_mlops.config import Settings, get_settings
from rakuten_mlops.evaluation.abtest import (
    compare_variants,
    mcnemar_exact,
    two_proportion_p,
    weighted_f1,
)
from rakuten_mlops.serving.prediction.predictor import ProductIn, split_bucket
from service_testing import stored_predictions


def test_split_is_sticky_and_near_the_share(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tiny_model_copy: Path,
) -> None:
    client = start_client(
        make_settings(
            challenger_mode="split",
            challenger_share=0.3,
            serve_challenger_model=str(tiny_model_copy),
        )
    )
    model = client.get("/v1/model").json()
    assert model["challenger"]["uri"] == str(tiny_model_copy)
    variants: dict[str, set[str]] = {}
    for round_ in range(2):
        for i in range(60):
            response = client.post(
                "/v1/predict",
                data={"designation": f"Roman tome {round_}", "productid": str(1000 + i)},
            )
            variants.setdefault(str(1000 + i), set()).add(response.json()["model"]["variant"])
    assert all(len(v) == 1 for v in variants.values())  # the same product, the same variant
    share = sum(v == {"challenger"} for v in variants.values()) / len(variants)
    expected = sum(split_bucket(ProductIn("x", productid=p)) < 0.3 for p in variants) / len(
        variants
    )
    assert share == expected and 0.1 < share < 0.5
    records = stored_predictions(client)
    assert {r.variant for r in records} == {"champion", "challenger"}
    assert not any(r.shadow for r in records)


def test_split_without_productid_hashes_the_title() -> None:
    a = split_bucket(ProductIn("Piscine Gonflable "))
    assert a == split_bucket(ProductIn("piscine gonflable"))
    assert 0 <= a < 1 and a != split_bucket(ProductIn("Roman"))


def test_shadow_predicts_silently_after_the_response(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tiny_model_copy: Path,
    jpeg_bytes: bytes,
) -> None:
    client = start_client(
        make_settings(challenger_mode="shadow", serve_challenger_model=str(tiny_model_copy))
    )
    answered = client.post(
        "/v1/predict",
        data={"designation": "Piscine gonflable", "productid": "77"},
        files={"image": ("a.jpg", jpeg_bytes, "image/jpeg")},
        headers={"X-Request-ID": "shadow-1"},
    ).json()
    assert answered["model"]["variant"] == "champion"
    batch = client.post(
        "/v1/predict/batch", json={"items": [{"designation": "Roman"}, {"designation": "Chat"}]}
    )
    assert batch.status_code == 200
    deadline = time.monotonic() + 10
    while len(records := stored_predictions(client)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(records) == 6
    shadows = [r for r in records if r.shadow]
    assert len(shadows) == 3 and {r.variant for r in shadows} == {"challenger"}
    first = next(r for r in shadows if r.request_id == "shadow-1")
    original = next(r for r in records if r.id == answered["prediction_id"])
    assert (first.productid, first.image_sha256) == (original.productid, original.image_sha256)
    assert first.has_image
    # The reviewers' queue shows answered predictions only, unless asked.
    assert client.get("/v1/predictions").json()["total"] == 3
    assert client.get("/v1/predictions", params={"include_shadow": True}).json()["total"] == 6


def _rows(pairs: list[tuple[int, int, int]]) -> list[dict[str, object]]:
    """Shadow-design records from (label, champion code, challenger code) triples."""
    rows: list[dict[str, object]] = []
    for i, (label, champion, challenger) in enumerate(pairs):
        common = {"request_id": f"r{i}", "productid": str(i), "designation": f"t{i}"}
        rows.append(
            {**common, "variant": "champion", "shadow": False, "prdtypecode": champion,
             "label": label, "latency_ms": 10.0, "model_version": "1"}
        )  # fmt: skip
        rows.append(
            {**common, "variant": "challenger", "shadow": True, "prdtypecode": challenger,
             "label": None, "latency_ms": 12.0, "model_version": "2"}
        )  # fmt: skip
    return rows


def test_abtest_shadow_design_detects_a_better_challenger() -> None:
    # Challenger right on 90 of 100, champion on 60; they agree where both are right.
    pairs = [(10, 10, 10)] * 60 + [(10, 40, 10)] * 30 + [(10, 40, 50)] * 10
    report = compare_variants(_rows(pairs), n_bootstrap=200)
    assert report.design == "shadow" and report.paired == 100
    assert report.champion.accuracy == pytest.approx(0.6)
    assert report.challenger.accuracy == pytest.approx(0.9)
    assert report.agreement == pytest.approx(0.6)
    assert report.significant is True and report.p_value < 0.001
    assert report.f1_difference is not None and report.f1_difference > 0
    low, high = report.f1_difference_ci or (0, 0)
    assert 0 < low <= report.f1_difference <= high
    assert "challenger is better" in report.verdict


def test_abtest_split_design_without_difference() -> None:
    rows = []
    for i in range(80):
        variant = "champion" if i % 2 else "challenger"
        rows.append(
            {"variant": variant, "shadow": False, "prdtypecode": 10,
             "label": 10 if i % 4 < 2 else 40, "latency_ms": 5.0 + i % 3,
             "request_id": str(i), "productid": str(i), "designation": "t", "model_version": "1"}
        )  # fmt: skip
    report = compare_variants(rows, n_bootstrap=200)
    assert report.design == "split" and report.agreement is None
    assert report.significant is False and "no significant" in report.verdict
    assert report.champion.weighted_f1_ci is not None


def test_weighted_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.choice([10, 40, 50, 60, 2583], size=50)
        p = np.where(rng.random(50) < 0.6, y, rng.choice([10, 40, 1160, 2905], size=50))
        expected = f1_score(y, p, average="weighted", zero_division=0)
        assert weighted_f1(y, p) == pytest.approx(expected, abs=1e-12)


def test_significance_helpers() -> None:
    assert mcnemar_exact([True] * 10, [True] * 10) == 1.0
    assert mcnemar_exact([False] * 20, [True] * 20) < 1e-5
    assert two_proportion_p(50, 100, 50, 100) == pytest.approx(1.0)
    assert two_proportion_p(0, 0, 5, 10) is None


def test_abtest_report_command_on_the_service_database(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tiny_model_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(challenger_mode="shadow", serve_challenger_model=str(tiny_model_copy))
    client = start_client(settings)
    for title, code in [("Piscine gonflable", 2583), ("Roman de poche", 10), ("Chat", 2220)]:
        answer = client.post("/v1/predict", data={"designation": title}).json()
        client.post(
            "/v1/feedback", json={"prediction_id": answer["prediction_id"], "prdtypecode": code}
        )
    deadline = time.monotonic() + 10
    while len(stored_predictions(client)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    out = tmp_path / "abtest.json"
    result = CliRunner().invoke(
        cli_app, ["abtest", "report", "--json", str(out), "--bootstrap", "100"]
    )
    assert result.exit_code == 0, result.output
    assert "design: shadow" in result.output and "agreement: 1.000" in result.output
    report = json.loads(out.read_text())
    assert report["paired"] == 3 and report["champion"]["labelled"] == 3
    bad = CliRunner().invoke(cli_app, ["abtest", "report", "--since", "last tuesday"])
    assert bad.exit_code != 0 and "--since" in bad.output
    # --since reads durations as the monitoring commands do (2w included), or ISO dates.
    for since in ("2w", "30m", "2026-01-01"):
        recent = CliRunner().invoke(cli_app, ["abtest", "report", "--since", since])
        assert recent.exit_code == 0, (since, recent.output)
