"""The model in a process of its own: the same answers as in process, a process per loaded
model, started again when it dies, stopped with the service."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.errors import ModelError
from rakuten_mlops.serving.app import create_app
from rakuten_mlops.serving.prediction.model_manager import LoadedModel
from rakuten_mlops.serving.prediction.model_process import ModelProcess
from security_testing import ADMIN_USERNAME, bearer, token_for
from service_testing import TinyModel, app_of, wait_ready

PRODUCTS = [
    {"designation": "Piscine gonflable ronde", "description": "avec pompe"},
    {"designation": "Roman de poche", "description": ""},
    {"designation": "Figurine manga", "description": "collection"},
]


def champion(client: TestClient) -> LoadedModel:
    model: LoadedModel | None = app_of(client).state.models.champion
    assert model is not None
    return model


def answers(client: TestClient, jpeg: bytes) -> list[dict[str, object]]:
    out = [client.post("/v1/predict", data=p).json() for p in PRODUCTS]
    image = client.post(
        "/v1/predict",
        data=PRODUCTS[0],
        files={"image": ("p.jpg", jpeg, "image/jpeg")},
    )
    assert image.status_code == 200, image.text
    return [*out, image.json()]


def test_same_answers_as_in_process_and_one_process_per_model(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    jpeg_bytes: bytes,
) -> None:
    in_process = start_client(make_settings(model_process=False))
    separate = start_client(make_settings(model_process=True))
    assert champion(in_process).process is None
    process = champion(separate).process
    assert process is not None and process.pid is not None and process.pid != os.getpid()
    expected, actual = answers(in_process, jpeg_bytes), answers(separate, jpeg_bytes)
    assert [a["prdtypecode"] for a in actual] == [e["prdtypecode"] for e in expected]
    assert [a["has_image"] for a in actual] == [e["has_image"] for e in expected] != [False] * 4
    for a, e in zip(actual, expected, strict=True):
        assert a["confidence"] == pytest.approx(e["confidence"], abs=1e-5)
        assert [t["code"] for t in a["top3"]] == [t["code"] for t in e["top3"]]  # type: ignore[union-attr]
    batch = separate.post("/v1/predict/batch", json={"items": PRODUCTS})
    assert [r["prediction"]["prdtypecode"] for r in batch.json()["results"]] == [
        e["prdtypecode"] for e in expected[:3]
    ]


def test_a_dead_model_process_is_started_again(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(model_process=True))
    process = champion(client).process
    assert process is not None and process.pid is not None
    dead = process.pid
    os.kill(dead, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(dead)], timeout=10)
    response = client.post("/v1/predict", data=PRODUCTS[1])
    assert response.status_code == 200, response.text
    assert process.pid not in (None, dead)


def test_reload_replaces_the_process_and_shutdown_stops_it(
    make_settings: Callable[..., Settings], tiny_model: TinyModel
) -> None:
    with TestClient(create_app(make_settings(model_process=True, model_retire_s=0))) as client:
        wait_ready(client)
        client.headers.update(bearer(token_for(client, ADMIN_USERNAME)))
        old = champion(client).process
        assert old is not None and old.pid is not None
        old_process = psutil.Process(old.pid)
        reload = client.post("/v1/admin/reload", params={"wait": True})
        assert reload.json()["state"] == "succeeded", reload.text
        new = champion(client).process
        assert new is not None and new is not old and new.pid != old_process.pid
        _, alive = psutil.wait_procs([old_process], timeout=30)  # retired at once (0 s)
        assert alive == []
        assert client.post("/v1/predict", data=PRODUCTS[0]).status_code == 200
        assert new.pid is not None
        last = psutil.Process(new.pid)
    _, alive = psutil.wait_procs([last], timeout=30)
    assert alive == []


def test_a_model_that_cannot_load_is_refused_with_the_reason(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ModelError, match="no MLflow model at"):
        ModelProcess(f"{tmp_path}/missing-model")
    assert time.monotonic() - started < 120
