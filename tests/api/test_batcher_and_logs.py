"""Micro-batching of concurrent requests, and what the JSON logs hold."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.serving.logs import JsonFormatter, request_id_var, truncate
from rakuten_mlops.serving.prediction.batcher import BatchResult, MicroBatcher, ModelItem
from rakuten_mlops.serving.prediction.model_manager import LoadedModel


class CountingModel:
    """A fake model: code 10 for every row; records the size of each call and its thread."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls.append(len(frame))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        n = len(frame)
        return pd.DataFrame(
            {
                "prdtypecode": [10] * n,
                "category": ["Livre occasion"] * n,
                "confidence": [0.9] * n,
                "top_1_code": [10] * n,
                "top_1_proba": [0.9] * n,
                "top_2_code": [40] * n,
                "top_2_proba": [0.05] * n,
                "top_3_code": [50] * n,
                "top_3_proba": [0.05] * n,
                "has_image": [False] * n,
            }
        )


def loaded(fake: CountingModel) -> LoadedModel:
    return LoadedModel(
        variant="champion", uri="fake", name="fake", version="1", alias=None, run_id=None,
        loaded_at=datetime.now(UTC), predict=fake,
    )  # fmt: skip


def test_concurrent_requests_share_model_calls_off_the_event_loop() -> None:
    fake = CountingModel()
    model = loaded(fake)

    async def scenario() -> list[int]:
        batcher = MicroBatcher(max_size=64, max_wait_s=0.05, concurrency=1)
        batcher.start()

        async def request(i: int) -> BatchResult:
            batcher.expect()  # what the middleware does when a request comes in
            await asyncio.sleep(0.001 * (i % 3))  # parsing the request
            return await batcher.predict(model, [ModelItem(f"title {i}")])

        results = await asyncio.gather(*(request(i) for i in range(20)))
        assert batcher.arriving == 0
        # A lone request is not delayed by the bounded wait.
        t0 = time.perf_counter()
        await batcher.predict(model, [ModelItem("alone")])
        alone_s = time.perf_counter() - t0
        await batcher.stop()
        assert alone_s < 0.05 + fake.delay_s
        return [r.batch_size for r in results]

    sizes = asyncio.run(scenario())
    assert sum(fake.calls[:-1]) == 20 and len(fake.calls) <= 4  # shared calls
    assert max(sizes) > 1
    assert fake.threads and all(name.startswith("model") for name in fake.threads)


def test_batcher_respects_max_size_and_reports_model_errors() -> None:
    fake = CountingModel(delay_s=0)

    async def scenario() -> None:
        batcher = MicroBatcher(max_size=4, max_wait_s=0.01)
        batcher.start()
        await asyncio.gather(*(batcher.predict(loaded(fake), [ModelItem("t")]) for _ in range(10)))

        def broken(frame: pd.DataFrame) -> pd.DataFrame:
            raise RuntimeError("model exploded")

        bad = LoadedModel(
            variant="champion", uri="x", name="x", version=None, alias=None, run_id=None,
            loaded_at=datetime.now(UTC), predict=broken,
        )  # fmt: skip
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.predict(bad, [ModelItem("t")])
        # The worker survives a failed call.
        ok = await batcher.predict(loaded(fake), [ModelItem("t")])
        assert ok.predictions[0].prdtypecode == 10
        await batcher.stop()

    asyncio.run(scenario())
    assert max(fake.calls) <= 4


def test_log_lines_are_json_with_request_id_and_no_bytes() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "INFO", "msg": "prediction", "image": b"\xff\xd8secret"}
    )
    token = request_id_var.set("rid-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-1" and line["message"] == "prediction"
    assert line["image"] == "<8 bytes>"
    assert truncate("x" * 100, 10) == "x" * 10 + "…" and truncate(None, 5) == ""


def test_service_log_file_truncates_titles(client: TestClient, tmp_path: Path) -> None:
    title = "Piscine " + "tres longue " * 40
    client.post("/v1/predict", data={"designation": title}, headers={"X-Request-ID": "long-1"})
    log = tmp_path / "logs" / "service.log"
    deadline = time.monotonic() + 10  # a listener thread writes the lines
    lines: list[dict[str, object]] = []
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        lines = [json.loads(line) for line in log.read_text().splitlines() if "long-1" in line]
    prediction = next(line for line in lines if line["message"] == "prediction")
    title = str(prediction["title"])
    assert len(title) == 81 and title.endswith("…")
    request = next(line for line in lines if line["message"] == "request")
    assert request["route"] == "/v1/predict" and request["status"] == 200
    assert float(str(request["duration_ms"])) > 0
