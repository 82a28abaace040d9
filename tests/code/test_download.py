"""`rakuten-mlops data download` against a real HTTP server on 127.0.0.1.

The server serves the Hugging Face path layout (`/datasets/<owner>/<name>/resolve/main/<file>`)
with Range support, built from small generated files: CSV rows and a real zip of real JPEGs.
It can drop a connection mid-file, answer errors, ignore Range, and it logs every request.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import stat
import struct
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from rakuten_mlops import schema
from rakuten_mlops.cli import app
from rakuten_mlops.data.download import (
    EXTRACT_MARKER,
    build_file_url,
    download_dataset,
    extract_images,
    plan_extraction,
    url_without_credentials,
)
from rakuten_mlops.data.manifest import Manifest, sha256_file
from rakuten_mlops.errors import DownloadError

HF_PREFIX = "/datasets/owner/rakuten/resolve/main/"
TRAIN_IMAGES = {"image_11_product_101.jpg": "red", "image_12_product_102.jpg": "green"}
TEST_IMAGES = {"image_21_product_201.jpg": "blue"}
MAX_BYTES = 50 * 1024**2
MAX_RATIO = 100.0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not swallow the requests to 127.0.0.1."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


# --- fixtures: generated dataset files ------------------------------------------------------


def make_jpeg(color: str, size: int = 32) -> bytes:
    """A real JPEG written by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_images_zip(prefix: str = "images/") -> bytes:
    """A zip of real JPEGs under `<prefix>image_train/` and `<prefix>image_test/`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{prefix}image_train/", b"")
        for name, color in TRAIN_IMAGES.items():
            archive.writestr(f"{prefix}image_train/{name}", make_jpeg(color))
        for name, color in TEST_IMAGES.items():
            archive.writestr(f"{prefix}image_test/{name}", make_jpeg(color))
        archive.writestr("__MACOSX/._junk", b"ignored")
    return buffer.getvalue()


def make_dataset_files(zip_prefix: str = "images/") -> dict[str, bytes]:
    """The four official files, small: CSV rows in the official layout and images.zip."""
    x_rows = [",designation,description,productid,imageid"]
    y_rows = [",prdtypecode"]
    for i in range(60):
        x_rows.append(f'{i},"Produit numéro {i} pour enfant","Description {i}",{100 + i},{10 + i}')
        y_rows.append(f"{i},{schema.PRODUCT_CODES[i % len(schema.PRODUCT_CODES)]}")
    x_test = [",designation,description,productid,imageid", '900,"Jeu PC test","",201,21']
    return {
        schema.X_TRAIN_FILE: ("\n".join(x_rows) + "\n").encode(),
        schema.Y_TRAIN_FILE: ("\n".join(y_rows) + "\n").encode(),
        schema.X_TEST_FILE: ("\n".join(x_test) + "\n").encode(),
        schema.IMAGES_ZIP: make_images_zip(zip_prefix),
    }


# --- fixtures: the HTTP server --------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequest:
    """What the server saw."""

    method: str
    name: str
    range: str | None
    authorization: str | None


@dataclass
class DatasetServer:
    """State and behaviour of the test server (tests change it between runs)."""

    files: dict[str, bytes]
    port: int = 0
    requests: list[LoggedRequest] = field(default_factory=list)
    # name -> bytes sent before closing the connection, applied to the next GETs (one each).
    drops: dict[str, list[int]] = field(default_factory=dict)
    # name -> statuses answered to the next GETs (one each).
    errors: dict[str, list[int]] = field(default_factory=dict)
    ignore_range: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HF_PREFIX}"

    def gets(self, name: str) -> list[LoggedRequest]:
        return [r for r in self.requests if r.method == "GET" and r.name == name]


def _make_handler(state: DatasetServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # silence stderr
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, *, send_body: bool) -> None:
            name = self.path.removeprefix(HF_PREFIX) if self.path.startswith(HF_PREFIX) else ""
            state.requests.append(
                LoggedRequest(
                    self.command, name, self.headers.get("Range"), self.headers.get("Authorization")
                )
            )
            body = state.files.get(name)
            if body is None:
                self._send_status(404)
                return
            if send_body and state.errors.get(name):
                self._send_status(state.errors[name].pop(0))
                return
            start = 0
            range_header = self.headers.get("Range")
            if range_header and not state.ignore_range and send_body:
                start = int(range_header.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not send_body:
                return
            if state.drops.get(name):
                # Send part of the body, then close: the client sees a short body.
                self.wfile.write(payload[: state.drops[name].pop(0)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _send_status(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def download_server() -> Iterator[DatasetServer]:
    """A real HTTP server on an ephemeral port, serving generated dataset files."""
    state = DatasetServer(files=make_dataset_files())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_download(
    server: DatasetServer,
    dest: Path,
    *,
    files: Sequence[str] = schema.DOWNLOAD_FILES,
    retries: int = 3,
    token: str | None = None,
) -> Manifest:
    return download_dataset(
        server.base_url,
        dest,
        token=token,
        retries=retries,
        backoff_s=0.01,
        max_extract_bytes=MAX_BYTES,
        max_extract_ratio=MAX_RATIO,
        files=files,
        progress=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- full download --------------------------------------------------------------------------


def test_full_download_writes_raw_layout_manifest_and_images(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    dest = tmp_path / "raw"
    manifest = run_download(download_server, dest)

    for name, body in download_server.files.items():
        assert (dest / name).read_bytes() == body
        assert not (dest / f"{name}.part").exists()
    entries = {f.path: f for f in manifest.files}
    assert list(entries) == list(schema.DOWNLOAD_FILES)
    for name, body in download_server.files.items():
        assert entries[name].size == len(body)
        assert entries[name].sha256 == sha256_file(dest / name)

    train_dir = dest / schema.IMAGE_TRAIN_DIR
    test_dir = dest / schema.IMAGE_TEST_DIR
    assert sorted(p.name for p in train_dir.iterdir()) == sorted(TRAIN_IMAGES)
    assert sorted(p.name for p in test_dir.iterdir()) == sorted(TEST_IMAGES)
    with Image.open(train_dir / "image_11_product_101.jpg") as image:
        assert image.format == "JPEG"
        assert image.size == (32, 32)
    assert not (dest / "__MACOSX").exists()
    directories = {d.path: d for d in manifest.directories}
    assert directories["images/image_train"].files == len(TRAIN_IMAGES)
    assert directories["images/image_test"].files == len(TEST_IMAGES)
    assert directories["images/image_train"].size == sum(
        p.stat().st_size for p in train_dir.iterdir()
    )
    assert not list(dest.glob(".images-extract-*"))

    on_disk = json.loads((dest / schema.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert on_disk["source"] == download_server.base_url
    assert Manifest.read(dest).files == manifest.files
    # One plain GET per file, nothing more.
    assert all(len(download_server.gets(name)) == 1 for name in schema.DOWNLOAD_FILES)


@pytest.mark.parametrize("base_suffix", ["", "/"])
def test_build_file_url_accepts_base_with_or_without_trailing_slash(base_suffix: str) -> None:
    base = "https://huggingface.co/datasets/o/n/resolve/main" + base_suffix
    assert build_file_url(base, "images.zip") == (
        "https://huggingface.co/datasets/o/n/resolve/main/images.zip"
    )


def test_base_url_without_trailing_slash_downloads(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    manifest = download_dataset(
        download_server.base_url.rstrip("/"),
        tmp_path / "raw",
        files=[schema.Y_TRAIN_FILE],
        progress=False,
        max_extract_bytes=MAX_BYTES,
        max_extract_ratio=MAX_RATIO,
    )
    assert [f.path for f in manifest.files] == [schema.Y_TRAIN_FILE]
    assert download_server.gets(schema.Y_TRAIN_FILE)[0].range is None


def test_redact_url_drops_credentials() -> None:
    assert (
        url_without_credentials("https://user:pw@mirror.example:8443/d/")
        == "https://mirror.example:8443/d/"
    )
    assert url_without_credentials("https://mirror.example/d/") == "https://mirror.example/d/"


# --- resume and skip ------------------------------------------------------------------------


def test_dropped_connection_resumes_with_range(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    body = download_server.files[schema.X_TRAIN_FILE]
    half = len(body) // 2
    download_server.drops[schema.X_TRAIN_FILE] = [half]

    dest = tmp_path / "raw"
    run_download(download_server, dest, files=[schema.X_TRAIN_FILE])

    assert (dest / schema.X_TRAIN_FILE).read_bytes() == body
    gets = download_server.gets(schema.X_TRAIN_FILE)
    assert [g.range for g in gets] == [None, f"bytes={half}-"]


def test_drops_after_progress_do_not_use_up_retries(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    body = download_server.files[schema.X_TRAIN_FILE]
    quarter = len(body) // 4
    download_server.drops[schema.X_TRAIN_FILE] = [quarter, quarter, quarter]

    dest = tmp_path / "raw"
    run_download(download_server, dest, files=[schema.X_TRAIN_FILE], retries=1)

    assert (dest / schema.X_TRAIN_FILE).read_bytes() == body
    ranges = [g.range for g in download_server.gets(schema.X_TRAIN_FILE)]
    assert ranges == [None, f"bytes={quarter}-", f"bytes={2 * quarter}-", f"bytes={3 * quarter}-"]


def test_server_ignoring_range_restarts_from_zero(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    body = download_server.files[schema.X_TRAIN_FILE]
    download_server.drops[schema.X_TRAIN_FILE] = [len(body) // 3]
    download_server.ignore_range = True

    dest = tmp_path / "raw"
    run_download(download_server, dest, files=[schema.X_TRAIN_FILE])

    # The 200 answer to the Range request rewrote the file from zero: no duplicated bytes.
    assert (dest / schema.X_TRAIN_FILE).read_bytes() == body


def test_interrupted_run_keeps_part_and_next_run_resumes(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    body = download_server.files[schema.X_TRAIN_FILE]
    half = len(body) // 2
    download_server.drops[schema.X_TRAIN_FILE] = [half]
    dest = tmp_path / "raw"

    with pytest.raises(DownloadError, match=r"dropped|closed|peer") as excinfo:
        run_download(download_server, dest, files=[schema.X_TRAIN_FILE], retries=0)
    assert "run the command again to resume" in str(excinfo.value).lower()
    part = dest / f"{schema.X_TRAIN_FILE}.part"
    assert part.read_bytes() == body[:half]
    assert not (dest / schema.X_TRAIN_FILE).exists()

    run_download(download_server, dest, files=[schema.X_TRAIN_FILE], retries=0)
    assert (dest / schema.X_TRAIN_FILE).read_bytes() == body
    assert not part.exists()
    assert download_server.gets(schema.X_TRAIN_FILE)[-1].range == f"bytes={half}-"


def test_complete_part_answered_416_is_finalised(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    body = download_server.files[schema.Y_TRAIN_FILE]
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / f"{schema.Y_TRAIN_FILE}.part").write_bytes(body)

    run_download(download_server, dest, files=[schema.Y_TRAIN_FILE])

    assert (dest / schema.Y_TRAIN_FILE).read_bytes() == body
    assert [g.range for g in download_server.gets(schema.Y_TRAIN_FILE)] == [f"bytes={len(body)}-"]


def test_rerun_skips_complete_files_and_extraction(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    dest = tmp_path / "raw"
    first = run_download(download_server, dest)
    image = dest / schema.IMAGE_TRAIN_DIR / "image_11_product_101.jpg"
    inode = image.stat().st_ino
    download_server.requests.clear()

    second = run_download(download_server, dest)

    assert {r.method for r in download_server.requests} == {"HEAD"}
    assert second.files == first.files
    assert second.directories == first.directories
    assert image.stat().st_ino == inode  # not extracted again
    marker = dest / "images" / EXTRACT_MARKER
    assert marker.read_text(encoding="utf-8").split()[0] == sha256_file(dest / schema.IMAGES_ZIP)


def test_file_with_wrong_size_is_downloaded_again(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / schema.Y_TRAIN_FILE).write_bytes(b"stale")

    run_download(download_server, dest, files=[schema.Y_TRAIN_FILE])

    assert (dest / schema.Y_TRAIN_FILE).read_bytes() == download_server.files[schema.Y_TRAIN_FILE]
    assert len(download_server.gets(schema.Y_TRAIN_FILE)) == 1


# --- HTTP errors, retries, auth -------------------------------------------------------------


def test_404_raises_naming_url_and_creates_nothing(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    del download_server.files[schema.X_TEST_FILE]
    dest = tmp_path / "raw"

    with pytest.raises(DownloadError) as excinfo:
        run_download(download_server, dest)

    message = str(excinfo.value)
    assert build_file_url(download_server.base_url, schema.X_TEST_FILE) in message
    assert "404" in message
    assert not (dest / schema.X_TEST_FILE).exists()
    assert not (dest / f"{schema.X_TEST_FILE}.part").exists()
    assert len(download_server.gets(schema.X_TEST_FILE)) == 1  # no retry on 404
    assert not (dest / schema.MANIFEST_FILE).exists()


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried(
    download_server: DatasetServer, tmp_path: Path, status: int
) -> None:
    download_server.errors[schema.Y_TRAIN_FILE] = [status, status]
    with pytest.raises(DownloadError, match=str(status)):
        run_download(download_server, tmp_path / "raw", files=[schema.Y_TRAIN_FILE])
    assert len(download_server.gets(schema.Y_TRAIN_FILE)) == 1


def test_server_errors_are_retried_then_succeed(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    download_server.errors[schema.Y_TRAIN_FILE] = [503, 500]
    dest = tmp_path / "raw"
    run_download(download_server, dest, files=[schema.Y_TRAIN_FILE], retries=2)
    assert (dest / schema.Y_TRAIN_FILE).read_bytes() == download_server.files[schema.Y_TRAIN_FILE]
    assert len(download_server.gets(schema.Y_TRAIN_FILE)) == 3


def test_server_errors_exhaust_retries(download_server: DatasetServer, tmp_path: Path) -> None:
    download_server.errors[schema.Y_TRAIN_FILE] = [503] * 5
    with pytest.raises(DownloadError, match="HTTP 503") as excinfo:
        run_download(download_server, tmp_path / "raw", files=[schema.Y_TRAIN_FILE], retries=2)
    assert "3 attempt" in str(excinfo.value)
    assert len(download_server.gets(schema.Y_TRAIN_FILE)) == 3


def test_token_is_sent_as_bearer_and_never_logged(
    download_server: DatasetServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    download_server.drops[schema.Y_TRAIN_FILE] = [10]  # also exercise the warning path
    dest = tmp_path / "raw"

    run_download(download_server, dest, token="hf_s3cret", files=[schema.Y_TRAIN_FILE])

    assert download_server.requests
    assert all(r.authorization == "Bearer hf_s3cret" for r in download_server.requests)
    assert "hf_s3cret" not in caplog.text
    assert "hf_s3cret" not in (dest / schema.MANIFEST_FILE).read_text(encoding="utf-8")


def test_no_authorization_header_without_token(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    run_download(download_server, tmp_path / "raw", files=[schema.Y_TRAIN_FILE])
    assert all(r.authorization is None for r in download_server.requests)


# --- unreachable server ---------------------------------------------------------------------


def test_unreachable_server_fails_fast_pointing_to_import(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}{HF_PREFIX}"
    started = time.monotonic()
    with pytest.raises(DownloadError) as excinfo:
        download_dataset(
            base_url,
            tmp_path / "raw",
            retries=5,  # the defaults: a refused connection must not use the full back-off
            backoff_s=1.0,
            progress=False,
            max_extract_bytes=MAX_BYTES,
            max_extract_ratio=MAX_RATIO,
        )
    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert "unreachable" in message
    assert "rakuten-mlops data import --source" in message
    assert not list((tmp_path / "raw").iterdir())


def test_name_resolution_failure_is_retried_once_without_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    this_thread = threading.get_ident()
    real_lookup = socket.getaddrinfo

    def fail_lookup(host: str, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != this_thread:  # another thread of the test process
            return real_lookup(host, *args, **kwargs)
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail_lookup)
    started = time.monotonic()
    with pytest.raises(DownloadError) as excinfo:
        download_dataset(
            "http://mirror.invalid/datasets/o/n/resolve/main/",
            tmp_path / "raw",
            retries=5,
            backoff_s=30.0,  # a real back-off would take minutes
            progress=False,
            max_extract_bytes=MAX_BYTES,
            max_extract_ratio=MAX_RATIO,
        )
    assert time.monotonic() - started < 5
    assert lookups == ["mirror.invalid", "mirror.invalid"]
    assert "unreachable" in str(excinfo.value)
    assert "data import" in str(excinfo.value)


# --- archive layout and safety --------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["images/", "", "rakuten/images/"])
def test_zip_layouts_are_normalised(tmp_path: Path, prefix: str) -> None:
    zip_path = tmp_path / "images.zip"
    zip_path.write_bytes(make_images_zip(prefix))
    dest = tmp_path / "raw"
    dest.mkdir()

    assert (
        extract_images(
            zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
        )
        is True
    )

    assert sorted(p.name for p in (dest / schema.IMAGE_TRAIN_DIR).iterdir()) == sorted(TRAIN_IMAGES)
    assert sorted(p.name for p in (dest / schema.IMAGE_TEST_DIR).iterdir()) == sorted(TEST_IMAGES)
    marker = dest / "images" / EXTRACT_MARKER
    assert marker.read_text(encoding="utf-8").split()[0] == sha256_file(zip_path)
    # Same archive again: skipped.
    assert (
        extract_images(
            zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
        )
        is False
    )


def test_new_archive_replaces_previous_extraction(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    zip_path = tmp_path / "images.zip"
    zip_path.write_bytes(make_images_zip())
    extract_images(
        zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
    )

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/image_train/image_99_product_999.jpg", make_jpeg("white"))
    zip_path.write_bytes(buffer.getvalue())
    assert (
        extract_images(
            zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
        )
        is True
    )

    assert [p.name for p in (dest / schema.IMAGE_TRAIN_DIR).iterdir()] == [
        "image_99_product_999.jpg"
    ]
    assert list((dest / schema.IMAGE_TEST_DIR).iterdir()) == []


def _zip_with(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/image_train/image_1_product_1.jpg", make_jpeg("red"))
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _assert_nothing_extracted(tmp_path: Path, dest: Path) -> None:
    assert not (dest / "images").exists()
    assert not list(dest.glob(".images-extract-*"))
    assert not [p for p in tmp_path.rglob("evil*")]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.jpg", "'..'"),
        ("images/image_train/../../../evil.jpg", "'..'"),
        ("..\\evil.jpg", "'..'"),
        ("ABSOLUTE", "absolute path"),
        ("C:/evil.jpg", "absolute path"),
        (_symlink_info("images/image_train/evil_link.jpg"), "symbolic link"),
    ],
)
def test_unsafe_members_are_refused(
    tmp_path: Path, member: zipfile.ZipInfo | str, reason: str
) -> None:
    if member == "ABSOLUTE":
        member = str(tmp_path / "evil_abs.jpg")
        assert member.startswith("/")
    zip_path = tmp_path / "images.zip"
    zip_path.write_bytes(_zip_with([(member, b"/etc/passwd")]))
    with zipfile.ZipFile(zip_path) as archive:  # the malicious name survived zipfile
        name = member.filename if isinstance(member, zipfile.ZipInfo) else member
        assert name in archive.namelist()
    dest = tmp_path / "raw"
    dest.mkdir()

    with pytest.raises(DownloadError, match=reason) as excinfo:
        extract_images(
            zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
        )

    assert repr(name) in str(excinfo.value)
    _assert_nothing_extracted(tmp_path, dest)


def test_zip_slip_through_download_is_refused(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    download_server.files[schema.IMAGES_ZIP] = _zip_with([("../evil.jpg", b"x")])
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"evil\.jpg"):
        run_download(download_server, dest)
    _assert_nothing_extracted(tmp_path, dest)
    assert not (dest / schema.MANIFEST_FILE).exists()


def test_zip_bomb_ratio_is_refused(tmp_path: Path) -> None:
    zip_path = tmp_path / "images.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images/image_train/evil_bomb.jpg", b"\0" * (4 * 1024**2))
    zip_path.write_bytes(buffer.getvalue())
    assert zip_path.stat().st_size * 100 < 4 * 1024**2  # really a high ratio
    dest = tmp_path / "raw"
    dest.mkdir()

    with pytest.raises(DownloadError, match="zip bomb"):
        extract_images(
            zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
        )
    _assert_nothing_extracted(tmp_path, dest)


def test_total_size_limit_is_enforced(tmp_path: Path) -> None:
    zip_path = tmp_path / "images.zip"
    zip_path.write_bytes(make_images_zip())
    dest = tmp_path / "raw"
    dest.mkdir()
    with pytest.raises(DownloadError, match="max_extract_bytes"):
        extract_images(
            zip_path, dest, max_extract_bytes=100, max_extract_ratio=100.0, progress=False
        )
    assert not (dest / "images").exists()


def test_lying_size_header_is_caught_while_streaming(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images/image_train/evil_liar.jpg", b"\0" * (1024**2))
    data = bytearray(buffer.getvalue())
    # Declare 100 bytes in the central directory (what zipfile trusts) for a 1 MiB member.
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 100)
    zip_path = tmp_path / "images.zip"
    zip_path.write_bytes(bytes(data))
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.infolist()[0].file_size == 100  # headers pass the ratio check
    dest = tmp_path / "raw"
    dest.mkdir()

    with pytest.raises(DownloadError, match=r"evil_liar\.jpg"):
        extract_images(
            zip_path, dest, progress=False, max_extract_bytes=MAX_BYTES, max_extract_ratio=MAX_RATIO
        )
    _assert_nothing_extracted(tmp_path, dest)


def _image_infos(*names: str, size: int = 1000) -> list[zipfile.ZipInfo]:
    infos = []
    for name in names:
        info = zipfile.ZipInfo(name)
        info.file_size = size
        infos.append(info)
    return infos


@pytest.mark.parametrize(
    ("archive_size", "max_bytes", "max_ratio", "match"),
    [
        (1000, 10**6, 1.5, "1.5 times the archive size"),
        (10**6, 1500, 100.0, "max_extract_bytes"),
    ],
)
def test_plan_extraction_refuses_declared_sizes_over_the_limits(
    archive_size: int, max_bytes: int, max_ratio: float, match: str
) -> None:
    infos = _image_infos("images/image_train/a.jpg", "images/image_test/b.jpg")
    with pytest.raises(DownloadError, match=match):
        plan_extraction(
            infos,
            archive_size=archive_size,
            max_extract_bytes=max_bytes,
            max_extract_ratio=max_ratio,
        )


def test_plan_extraction_maps_members_and_ignores_others() -> None:
    infos = _image_infos(
        "images/image_train/a.jpg", "image_test/b.jpg", "notes/readme.txt", "image_train"
    )
    members = plan_extraction(
        infos, archive_size=2000, max_extract_bytes=10**6, max_extract_ratio=1.0
    )
    assert [str(m.target) for m in members] == ["image_train/a.jpg", "image_test/b.jpg"]


def test_plan_extraction_refuses_duplicates_across_layouts() -> None:
    infos = _image_infos("images/image_train/a.jpg", "image_train/a.jpg")
    with pytest.raises(DownloadError, match="duplicate"):
        plan_extraction(infos, archive_size=10**6, max_extract_bytes=10**6, max_extract_ratio=10)


def test_plan_extraction_refuses_archive_without_images() -> None:
    info = zipfile.ZipInfo("README.txt")
    info.file_size = 10
    with pytest.raises(DownloadError, match="no file under image_train"):
        plan_extraction([info], archive_size=100, max_extract_bytes=1000, max_extract_ratio=10)


def test_not_a_zip_is_reported(tmp_path: Path) -> None:
    zip_path = tmp_path / "images.zip"
    zip_path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="not a valid zip"):
        extract_images(
            zip_path,
            tmp_path,
            progress=False,
            max_extract_bytes=MAX_BYTES,
            max_extract_ratio=MAX_RATIO,
        )


# --- the real CLI ---------------------------------------------------------------------------


def test_cli_download_prints_manifest_summary(
    download_server: DatasetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rakuten_mlops.config import get_settings

    monkeypatch.setenv("RAKUTEN_DOWNLOAD_BACKOFF_S", "0.01")
    monkeypatch.setenv("RAKUTEN_HF_TOKEN", "hf_cli_token")
    get_settings.cache_clear()
    dest = tmp_path / "raw"

    result = CliRunner().invoke(
        app, ["data", "download", "--base-url", download_server.base_url, "--dest", str(dest)]
    )

    assert result.exit_code == 0, result.output
    assert f"source: {download_server.base_url}" in result.stdout
    assert "images/image_train/: 2 files" in result.stdout
    assert "hf_cli_token" not in result.output
    assert all(r.authorization == "Bearer hf_cli_token" for r in download_server.requests)
    assert (dest / schema.MANIFEST_FILE).is_file()


def test_cli_download_error_is_one_line_without_traceback(
    download_server: DatasetServer, tmp_path: Path
) -> None:
    download_server.files.pop(schema.X_TRAIN_FILE)
    result = CliRunner().invoke(
        app,
        ["data", "download", "--base-url", download_server.base_url, "--dest", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert "404" in result.stderr
    assert "Traceback" not in result.output
