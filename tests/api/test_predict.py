"""POST /v1/predict and /v1/predict/batch with a TestClient."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.inference.batch import predict_csv
from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model
from rakuten_mlops.models.review import ReviewRule
from service_testing import TinyModel, stored_predictions


def test_predict_matches_batch_prediction_with_and_without_image(
    client: TestClient, tiny_model: TinyModel, tmp_path: Path
) -> None:
    products = tiny_model.test.head(6).reset_index(drop=True)
    # The batch CLI path on the same products (images found by id in their folder).
    csv = tmp_path / "X.csv"
    products[["designation", "description", "productid", "imageid"]].to_csv(csv)
    images_dir = Path(next(p for p in products["image_path"] if p)).parent
    batch = predict_csv(
        as_predict_fn(load_pyfunc_model(tiny_model.path)),
        csv,
        tmp_path / "out.csv",
        images_dir=images_dir,
        progress=False,
    )
    expected = pd.read_csv(batch.output, index_col=0)
    assert expected["has_image"].any() and not expected["has_image"].all()

    for i, product in products.iterrows():
        files = {}
        if product["image_path"]:
            files["image"] = ("p.jpg", Path(product["image_path"]).read_bytes(), "image/jpeg")
        response = client.post(
            "/v1/predict",
            data={
                "designation": product["designation"],
                "description": product["description"],
                "productid": str(product["productid"]),
                "imageid": str(product["imageid"]),
            },
            files=files or None,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["prdtypecode"] == expected.loc[i, "prdtypecode"]
        assert body["confidence"] == pytest.approx(expected.loc[i, "confidence"], abs=1e-6)
        assert body["has_image"] == bool(expected.loc[i, "has_image"])
        assert [t["code"] for t in body["top3"]] == [
            expected.loc[i, f"top_{k}_code"] for k in (1, 2, 3)
        ]
        assert body["model"]["variant"] == "champion"
        # The model's own review rule, the same in the API and in `predict`.
        assert body["needs_review"] == bool(expected.loc[i, "needs_review"])

    records = stored_predictions(client)
    assert len(records) == len(products)
    assert [r.needs_review for r in records] == expected["needs_review"].tolist()
    assert sum(r.has_image for r in records) == int(expected["has_image"].sum())
    assert all(r.username == "admin" and r.top3 and not r.shadow for r in records)
    with_image = next(r for r in records if r.has_image)
    assert with_image.image_sha256 and len(with_image.image_sha256) == 64
    assert with_image.image_path is None  # no image store configured: hash only


def test_the_api_and_predict_flag_the_same_products_for_review(
    tiny_model: TinyModel,
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    # The model's own rule, moved to the median confidence so that both answers occur.
    products = tiny_model.test.reset_index(drop=True)
    confidence = tiny_model.classifier.predict(products)["confidence"]
    model = tmp_path / "model"
    shutil.copytree(tiny_model.path, model)
    meta_path = model / "artifacts" / "classifier" / "classifier.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    rule = ReviewRule(0.95, "global", float(confidence.median()))
    meta["review_rule"] = rule.to_dict()
    meta_path.write_text(json.dumps(meta), encoding="utf-8")

    csv = tmp_path / "X.csv"
    products[["designation", "description"]].to_csv(csv)
    batch = predict_csv(
        as_predict_fn(load_pyfunc_model(model)), csv, tmp_path / "out.csv", progress=False
    )
    expected = pd.read_csv(batch.output, index_col=0)["needs_review"].tolist()
    assert any(expected) and not all(expected)

    client = start_client(make_settings(serve_model=str(model)))
    answers = [
        client.post(
            "/v1/predict", data={"designation": p.designation, "description": p.description}
        ).json()["needs_review"]
        for p in products.itertuples()
    ]
    assert answers == expected


def test_the_review_threshold_setting_overrides_the_models_rule(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    for threshold, flagged in ((1.0, True), (0.0, False)):
        client = start_client(make_settings(review_threshold=threshold))
        body = client.post("/v1/predict", data={"designation": "Piscine gonflable"}).json()
        assert body["needs_review"] is flagged, (threshold, body)


def test_request_id_is_kept_or_generated(client: TestClient) -> None:
    kept = client.post(
        "/v1/predict", data={"designation": "Roman"}, headers={"X-Request-ID": "req-42"}
    )
    assert kept.headers["x-request-id"] == "req-42"
    generated = client.post("/v1/predict", data={"designation": "Roman"})
    assert len(generated.headers["x-request-id"]) == 32
    hostile = client.post(
        "/v1/predict", data={"designation": "Roman"}, headers={"X-Request-ID": "a b\tc" * 30}
    )
    assert hostile.headers["x-request-id"] != "a b\tc" * 30
    assert {r.request_id for r in stored_predictions(client)} >= {"req-42"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "designation"),
        ({"designation": "   "}, "designation"),
        ({"designation": "x" * 1001}, "designation"),
        ({"designation": "ok", "productid": "9" * 65}, "productid"),
    ],
)
def test_bad_form_is_422_naming_the_field(
    client: TestClient, data: dict[str, str], field: str
) -> None:
    response = client.post("/v1/predict", data=data)
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == field
    assert field in body["detail"] and "Traceback" not in response.text


def test_json_body_on_multipart_route_is_422(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"designation": "Roman"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "designation"


def test_image_too_large_is_413_and_corrupt_image_is_422(
    start_client: Callable[[Settings], TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(max_image_bytes=1000))
    big = client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("a.jpg", b"\xff" * 2000, "image/jpeg")},
    )
    assert big.status_code == 413 and big.json()["detail"].startswith("image:")
    corrupt = client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("a.jpg", b"not a jpeg", "image/jpeg")},
    )
    assert (
        corrupt.status_code == 422
    )  # refused, not silently ignored (tests/api/test_hostile_input.py)
    assert corrupt.json()["errors"][0]["field"] == "image"
    empty = client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("", b"", "application/octet-stream")},
    )
    assert empty.status_code == 200 and empty.json()["has_image"] is False


def test_uploaded_images_are_stored_by_hash_when_configured(
    start_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    jpeg_bytes: bytes,
) -> None:
    client = start_client(make_settings(image_store_dir=tmp_path / "images"))
    response = client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("a.jpg", jpeg_bytes, "image/jpeg")},
    )
    assert response.status_code == 200 and response.json()["has_image"]
    (record,) = stored_predictions(client)
    assert record.image_path is not None
    assert Path(record.image_path).read_bytes() == jpeg_bytes
    assert record.image_sha256 in record.image_path


def test_batch_with_one_bad_item(client: TestClient, jpeg_bytes: bytes) -> None:
    items = [
        {"designation": "Piscine gonflable", "productid": 1},
        {"designation": "Roman de poche", "image_base64": "%%% not base64"},
        {"designation": "Carte pokemon", "image_base64": base64.b64encode(jpeg_bytes).decode()},
        {"description": "no title"},
        {"designation": "Housse de couette coton"},
    ]
    response = client.post("/v1/predict/batch", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (3, 2)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["ok"] for r in results] == [True, False, True, False, True]
    assert results[1]["errors"][0]["field"] == "items[1].image_base64"
    assert results[3]["errors"][0]["field"] == "items[3].designation"
    assert results[0]["prediction"]["prdtypecode"] == 2583
    assert results[2]["prediction"]["has_image"] is True
    # One model call for the whole batch.
    assert {r["prediction"]["timing"]["batch_size"] for r in results if r["ok"]} == {3}
    assert len(stored_predictions(client)) == 3


def test_batch_limits(
    start_client: Callable[[Settings], TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(batch_max_items=2))
    too_many = client.post("/v1/predict/batch", json={"items": [{"designation": "a"}] * 3})
    assert too_many.status_code == 413 and "items" in too_many.json()["detail"]
    empty = client.post("/v1/predict/batch", json={"items": []})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "items"
    not_json = client.post(
        "/v1/predict/batch", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
