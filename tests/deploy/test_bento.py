"""The BentoML serving path: `scripts/bento.sh build` builds a Bento of a real model, and
`bentoml serve` (a real process, .venv-bento) answers what `rakuten-mlops predict` says."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from docker_testing import REPO, run
from rakuten_mlops.schema import IMAGE_TRAIN_DIR, X_TRAIN_FILE, image_filename
from service_testing import free_port

pytestmark = pytest.mark.slow

BENTO_VENV = REPO / ".venv-bento"
CLI = REPO / ".venv/bin/rakuten-mlops"


@pytest.fixture(scope="module")
def bento_home(sample_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BentoML home holding the sample model and the Bento built from it."""
    assert (BENTO_VENV / "bin/bentoml").is_file(), "run `make bento-venv` (make test does)"
    home = tmp_path_factory.mktemp("bentoml")
    built = run(
        "bash",
        str(REPO / "scripts/bento.sh"),
        "build",
        timeout=600,
        env={**os.environ, "BENTOML_HOME": str(home), "BENTO_MODEL": str(sample_model_dir)},
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert built.stdout.strip().splitlines()[-1].startswith("__tag__:rakuten_product_classifier:")
    return home


@pytest.fixture(scope="module")
def bento_url(bento_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`bentoml serve` of the built Bento, a real process on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("bento-serve") / "serve.log"
    env = {**os.environ, "BENTOML_HOME": str(bento_home), "BENTO_PORT": str(port)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(REPO / "scripts/bento.sh"), "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def sample_products(sample_dir: Path) -> pd.DataFrame:
    """20 products of the sample, 12 of them with their image, in the official X layout."""
    x = pd.read_csv(sample_dir / X_TRAIN_FILE, index_col=0)
    images = sample_dir / IMAGE_TRAIN_DIR
    has_image = [
        (images / image_filename(i, p)).is_file()
        for i, p in zip(x["imageid"], x["productid"], strict=True)
    ]
    with_image = x[has_image].sample(n=12, random_state=3)
    without = x[[not h for h in has_image]].sample(n=8, random_state=3)
    return pd.concat([with_image, without]).sample(frac=1.0, random_state=3)


def _item(row: pd.Series, images: Path) -> dict[str, str]:
    item = {"designation": str(row["designation"])}
    if isinstance(row["description"], str):
        item["description"] = row["description"]
    path = images / image_filename(row["imageid"], row["productid"])
    if path.is_file():
        item["image_base64"] = base64.b64encode(path.read_bytes()).decode()
    return item


def test_the_bento_answers_the_codes_of_rakuten_mlops_predict(
    bento_url: str,
    sample_products: pd.DataFrame,
    sample_model_dir: Path,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    csv, out = tmp_path / "x.csv", tmp_path / "predictions.csv"
    sample_products.to_csv(csv)
    predicted = subprocess.run(
        [str(CLI), "predict", "--model", str(sample_model_dir), "--input", str(csv),
         "--images", str(sample_dir / IMAGE_TRAIN_DIR), "--output", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    expected = pd.read_csv(out)
    assert len(expected) == 20

    items = [_item(row, sample_dir / IMAGE_TRAIN_DIR) for _, row in sample_products.iterrows()]
    assert sum("image_base64" in item for item in items) == 12
    # One request with the 20 products...
    answer = httpx.post(f"{bento_url}/classify", json={"products": items}, timeout=60)
    assert answer.status_code == 200, answer.text
    together = answer.json()
    assert [p["prdtypecode"] for p in together] == expected["prdtypecode"].tolist()
    assert [p["has_image"] for p in together] == [bool("image_base64" in i) for i in items]
    # The model's own review rule, the same in the Bento and in `predict`.
    assert [p["needs_review"] for p in together] == expected["needs_review"].tolist()
    for prediction, confidence in zip(together, expected["confidence"], strict=True):
        assert prediction["confidence"] == pytest.approx(confidence, abs=1e-6)
        assert prediction["category"] and len(prediction["top3"]) == 3
    # ...and 20 concurrent requests of one product, which adaptive batching may merge.
    with ThreadPoolExecutor(max_workers=10) as pool, httpx.Client(timeout=60) as http:
        answers = list(
            pool.map(lambda i: http.post(f"{bento_url}/classify", json={"products": [i]}), items)
        )
    assert [a.status_code for a in answers] == [200] * 20
    assert [a.json()[0]["prdtypecode"] for a in answers] == expected["prdtypecode"].tolist()


def test_a_bad_product_is_refused_alone_with_the_field_named(bento_url: str) -> None:
    good = {"designation": "Piscine tubulaire ronde 3,66 x 0,76 m"}
    for bad, field in (
        ({"designation": "   "}, "designation"),
        ({"designation": "Carte Pokemon", "image_base64": "not base64!"}, "image_base64"),
        ({"designation": "Carte Pokemon", "image_base64": base64.b64encode(b"GIF89a").decode()},
         "image_base64"),
    ):  # fmt: skip
        answer = httpx.post(f"{bento_url}/classify", json={"products": [good, bad]}, timeout=30)
        assert answer.status_code == 400, answer.text
        assert field in answer.text
    assert httpx.post(f"{bento_url}/classify", json={"products": [good]}, timeout=30).is_success
