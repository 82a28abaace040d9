"""Hostile input: every bad upload is a 4xx JSON naming the field, never a 5xx or a
traceback, and the next normal request is served."""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth.inputs import image_problem
from service_testing import stored_predictions

MB = 1024 * 1024


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def real_bomb_png(side: int) -> bytes:
    """A real PNG of `side` x `side` black pixels: a few KB that decode to side² bytes."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def encoded(image_format: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture
def hostile_client(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> TestClient:
    """A ready client with a 4 MB body limit (the default is 16 MB)."""
    return start_client(make_settings(max_body_bytes=4 * MB))


def assert_refused(response: object, status: int | tuple[int, ...], field: str | None) -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    text = response.text  # type: ignore[attr-defined]
    assert "Traceback" not in text and 'File "' not in text
    if field is not None:
        body = response.json()  # type: ignore[attr-defined]
        fields = [e["field"] for e in body.get("errors") or []]
        assert field in fields or body["detail"].startswith(f"{field}:"), body


def assert_still_serving(client: TestClient, jpeg: bytes) -> None:
    response = client.post(
        "/v1/predict",
        data={"designation": "Piscine tubulaire ronde"},
        files={"image": ("p.jpg", jpeg, "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["has_image"] is True


def test_bad_images_are_refused_naming_the_field(
    hostile_client: TestClient, jpeg_bytes: bytes
) -> None:
    cases: list[tuple[str, bytes, str, str]] = [
        ("truncated.jpg", jpeg_bytes[: len(jpeg_bytes) // 2], "image/jpeg", "truncated"),
        ("notes.jpg", b"just some text, not a photo\n" * 20, "image/jpeg", "not an image"),
        ("bomb.png", bomb_png(30_000, 30_000), "image/png", "pixels"),
        ("bomb-real.png", real_bomb_png(6_000), "image/png", "pixels"),
        ("photo.jpg", jpeg_bytes, "text/plain", "content type"),
        ("photo.png", jpeg_bytes, "image/png", "declared image/png"),
        ("anim.gif", encoded("GIF"), "image/gif", "content type"),
        # Pillow opens the accepted formats only: a GIF is no image to it.
        ("anim.gif", encoded("GIF"), "application/octet-stream", "not an image"),
        ("x.bmp", encoded("BMP"), "application/octet-stream", "not an image"),
        ("nul.jpg", b"\x00" * 4096, "image/jpeg", "not an image"),
    ]
    for name, content, content_type, reason in cases:
        response = hostile_client.post(
            "/v1/predict",
            data={"designation": "Piscine"},
            files={"image": (name, content, content_type)},
        )
        assert_refused(response, 422, "image")
        assert reason in response.json()["detail"], (name, response.json()["detail"])
        assert_still_serving(hostile_client, jpeg_bytes)
    # Good images of each accepted format pass.
    for image_format, content_type in (
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
    ):
        ok = hostile_client.post(
            "/v1/predict",
            data={"designation": "Piscine"},
            files={"image": ("x", encoded(image_format), content_type)},
        )
        assert ok.status_code == 200 and ok.json()["has_image"] is True, (image_format, ok.text)


def test_image_pixels_limit_is_a_setting(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(max_image_pixels=1000))
    response = client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("x.jpg", encoded("JPEG", (64, 48)), "image/jpeg")},
    )
    assert_refused(response, 422, "image")
    assert "64x48 pixels, at most 1000" in response.json()["detail"]


def test_oversized_bodies_are_413_before_or_while_reading(
    hostile_client: TestClient, jpeg_bytes: bytes
) -> None:
    fifty = b"\xff" * (50 * MB)
    declared = hostile_client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("big.jpg", fifty, "image/jpeg")},
    )
    assert_refused(declared, 413, None)
    assert "RAKUTEN_MAX_BODY_BYTES" in declared.json()["detail"]
    assert_still_serving(hostile_client, jpeg_bytes)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="designation"\r\n\r\nPiscine\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        yield b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(50):
            yield b"\xff" * MB

    streamed = hostile_client.post(
        "/v1/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_refused(streamed, 413, None)
    assert_still_serving(hostile_client, jpeg_bytes)
    batch = hostile_client.post(
        "/v1/predict/batch",
        json={"items": [{"designation": "x", "image_base64": "A" * (5 * MB)}]},
    )
    assert_refused(batch, 413, None)
    assert_still_serving(hostile_client, jpeg_bytes)


def test_long_text_and_odd_unicode(hostile_client: TestClient, jpeg_bytes: bytes) -> None:
    megabyte = "a" * 1_000_000  # 1 MB (a field over 1 MiB gets Starlette's 400, below)
    for field, value, status in (
        ("designation", megabyte, 422),
        ("description", megabyte, 422),
        ("designation", "", 422),
        ("designation", "   \t ", 422),
        ("designation", "\u200b\u200d\u2060\ufeff", 422),  # only zero-width characters
        ("designation", "\u202e\u200f", 422),  # only direction marks
        ("designation", "Piscine\x00gonflable", 422),
        ("description", "Livrée\x00avec pompe", 422),
        ("productid", "12\x0034", 422),
        ("designation", "Piscine \x1b[31m rouge", 422),
        ("designation", "Piscine\x7f", 422),
    ):
        data = {"designation": "Piscine", field: value}
        response = hostile_client.post("/v1/predict", data=data)
        assert_refused(response, status, field)
        assert_still_serving(hostile_client, jpeg_bytes)
    huge_field = hostile_client.post(
        "/v1/predict", data={"designation": "x", "description": "a" * 2 * MB}
    )
    assert_refused(huge_field, 400, None)
    assert "maximum size" in huge_field.json()["detail"]
    missing = hostile_client.post("/v1/predict", data={"description": "sans titre"})
    assert_refused(missing, 422, "designation")
    # Real titles in other scripts, with emoji, RTL or zero-width characters are products too.
    odd = "\u202eلوحة\u202c Piscine 🏊\u200b ronde \U0001f600 ñ 中文 l\x92été"  # \x92: real data
    served = hostile_client.post(
        "/v1/predict", data={"designation": odd, "description": "🏊" * 500}
    )
    assert served.status_code == 200, served.text
    (record,) = [r for r in stored_predictions(hostile_client) if r.designation == odd]
    assert record.description == "🏊" * 500


def test_batch_items_fail_alone(hostile_client: TestClient, jpeg_bytes: bytes) -> None:
    items = [
        {"designation": "Piscine", "image_base64": base64.b64encode(jpeg_bytes[:300]).decode()},
        {"designation": "Roman\x00"},
        {"designation": "\u200b"},
        {"designation": "Piscine", "image_base64": base64.b64encode(b"text").decode()},
        {"designation": "a" * 5000},
        {"designation": "Piscine gonflable", "image_base64": base64.b64encode(jpeg_bytes).decode()},
    ]
    response = hostile_client.post("/v1/predict/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    fields = [r["errors"][0]["field"] if r["errors"] else None for r in results]
    assert fields == [
        "items[0].image_base64",
        "items[1].designation",
        "items[2].designation",
        "items[3].image_base64",
        "items[4].designation",
        None,
    ]
    assert results[-1]["prediction"]["has_image"] is True
    for body, content_type in (("{not json", "application/json"), ("[]", "application/json")):
        bad = hostile_client.post(
            "/v1/predict/batch", content=body, headers={"Content-Type": content_type}
        )
        assert_refused(bad, 422, None)
    assert_still_serving(hostile_client, jpeg_bytes)


def test_malformed_multipart_is_4xx(hostile_client: TestClient, jpeg_bytes: bytes) -> None:
    many = {f"f{i}": "x" for i in range(1500)}  # over Starlette's 1000 fields
    for response in (
        hostile_client.post("/v1/predict", data={"designation": "Piscine", **many}),
        hostile_client.post(
            "/v1/predict",
            content=b"--b\r\nnot a part\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        hostile_client.post(
            "/v1/predict", content=b"designation=x", headers={"Content-Type": "text/plain"}
        ),
    ):
        assert 400 <= response.status_code < 500, response.text
        assert "Traceback" not in response.text
    assert_still_serving(hostile_client, jpeg_bytes)


def test_image_problem_unit(jpeg_bytes: bytes) -> None:
    assert image_problem(jpeg_bytes, 25_000_000, "image/jpeg") is None
    assert image_problem(jpeg_bytes, 25_000_000, None) is None
    assert image_problem(jpeg_bytes, 25_000_000, "image/jpeg; charset=binary") is None
    assert "truncated" in (image_problem(jpeg_bytes[:-200], 25_000_000) or "")
    assert "pixels" in (image_problem(bomb_png(100_000, 100_000), 25_000_000) or "")
