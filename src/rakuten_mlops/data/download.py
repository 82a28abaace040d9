"""Download the challenge data from the Hugging Face dataset (or a mirror of it).

`download_dataset` fetches the official CSV files and `images.zip` into the raw directory,
then extracts the images into `images/image_train/` and `images/image_test/` and writes
`manifest.json`. It is built to survive the real world:

* each file is streamed to `<name>.part` and renamed only once complete, so a final name
  always means a complete file;
* an interrupted or dropped transfer resumes with an HTTP Range request, within the same
  run (retries with exponential back-off) or in the next one (the `.part` file is kept);
* files already present are not downloaded again;
* the archive is extracted only after every member has been checked (no absolute paths,
  no `..`, no symbolic links, bounded total size and compression ratio), into a temporary
  directory that is moved into place at the end.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from tqdm import tqdm

from rakuten_mlops import __version__, schema
from rakuten_mlops.data.manifest import Manifest, sha256_file
from rakuten_mlops.errors import DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_MAX_BACKOFF_S = 60.0
# Name resolution failing means offline or a typo in the URL: waiting will not fix it.
_DNS_RETRIES = 1
_DNS_RETRY_DELAY_S = 0.2
# A refused or timed-out connection is retried briefly only: offline, the user should hear
# about `data import` within seconds, not after minutes of back-off.
_UNREACHABLE_RETRIES = 2
_UNREACHABLE_MAX_DELAY_S = 1.0
# A HEAD only decides whether to skip a file already present: do not let it hang for long.
_HEAD_TIMEOUT_S = 15.0
_NO_RETRY_STATUSES = frozenset({401, 403, 404})
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")
_WINDOWS_DRIVE_RE = re.compile(r"^[A-Za-z]:")

IMAGES_ROOT = schema.IMAGE_TRAIN_DIR.parent
IMAGE_DIR_NAMES = (schema.IMAGE_TRAIN_DIR.name, schema.IMAGE_TEST_DIR.name)
# Written in `images/` once extraction is complete: the SHA-256 of the archive extracted.
EXTRACT_MARKER = ".extracted.sha256"
_EXTRACT_TMP_PREFIX = ".images-extract-"

_IMPORT_HINT = (
    "use `rakuten-mlops data import --source DIR` with a local copy of the dataset instead"
)


@dataclass(frozen=True)
class ZipMember:
    """One archive member to extract, and where it goes relative to `images/`."""

    info: zipfile.ZipInfo
    target: PurePosixPath  # e.g. image_train/image_1_product_2.jpg


class _TransientError(Exception):
    """A failure worth retrying (network, 5xx, dropped connection)."""

    def __init__(
        self, reason: str, *, kind: str = "other", retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "dns", "unreachable" or "other"
        self.retry_after_s = retry_after_s


def build_file_url(base_url: str, name: str) -> str:
    """Join the dataset base URL and a file name (with or without a trailing slash)."""
    return f"{base_url.rstrip('/')}/{quote(name)}"


def url_without_credentials(url: str) -> str:
    """The URL without user:password, safe to log or record."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def download_dataset(
    base_url: str,
    dest: Path,
    *,
    token: str | None = None,
    timeout_s: float = 60,
    retries: int = 5,
    backoff_s: float = 1.0,
    max_extract_bytes: int,
    max_extract_ratio: float,
    files: Sequence[str] = schema.DOWNLOAD_FILES,
    progress: bool = True,
) -> Manifest:
    """Download the dataset files into `dest`, extract the images and write the manifest.

    Args:
        base_url: folder URL the file names are appended to (Hugging Face `resolve/main/`).
        dest: the raw data directory.
        token: sent as `Authorization: Bearer <token>` (private mirrors); never logged.
        timeout_s: network timeout of each request (connect, read, write).
        retries: retries of a file after a transient failure (network error, timeout, 5xx,
            dropped connection); an attempt that made progress does not use one up.
        backoff_s: first retry delay, doubled at each retry.
        max_extract_bytes: refuse an archive that expands beyond this many bytes.
        max_extract_ratio: refuse an archive that expands beyond this ratio of its size.
        files: file names to fetch; `images.zip` among them is extracted.
        progress: show tqdm progress bars on stderr.

    Returns:
        The manifest written to `dest/manifest.json`.

    Raises:
        DownloadError: server unreachable, HTTP error, retries exhausted or unsafe archive.
    """
    scheme = urlsplit(base_url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(
            f"base URL must start with http:// or https://: {url_without_credentials(base_url)}"
        )
    for name in files:
        if not name or PurePosixPath(name).name != name or name in (".", ".."):
            raise DownloadError(f"invalid dataset file name {name!r}: expected a plain file name")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    source = url_without_credentials(base_url)
    manifest = Manifest(source=source)
    headers = {
        # Byte counts must match Content-Length / Content-Range: no transparent compression.
        "Accept-Encoding": "identity",
        "User-Agent": f"rakuten-mlops/{__version__}",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    zip_sha256: str | None = None
    log.info("downloading %d files from %s into %s", len(files), source, dest)
    # httpx drops Authorization on redirects to another host (Hugging Face -> its CDN).
    with httpx.Client(
        headers=headers, timeout=httpx.Timeout(timeout_s), follow_redirects=True
    ) as client:
        for name in files:
            target = dest / name
            download_file(
                client,
                build_file_url(base_url, name),
                target,
                retries=retries,
                backoff_s=backoff_s,
                progress=progress,
            )
            entry = manifest.add_file(dest, target)
            if name == schema.IMAGES_ZIP:
                zip_sha256 = entry.sha256

    if zip_sha256 is not None:
        extract_images(
            dest / schema.IMAGES_ZIP,
            dest,
            max_extract_bytes=max_extract_bytes,
            max_extract_ratio=max_extract_ratio,
            zip_sha256=zip_sha256,
            progress=progress,
        )
        for directory in (schema.IMAGE_TRAIN_DIR, schema.IMAGE_TEST_DIR):
            manifest.add_directory(dest, dest / directory)
    manifest.write(dest)
    return manifest


def download_file(
    client: httpx.Client,
    url: str,
    target: Path,
    *,
    retries: int,
    backoff_s: float,
    progress: bool = True,
) -> bool:
    """Download `url` to `target` atomically, resuming `<target>.part` when present.

    Returns:
        False when `target` was already complete (skipped), True when it was downloaded.

    Raises:
        DownloadError: HTTP 401/403/404 (no retry), server unreachable, or retries exhausted.
    """
    shown_url = url_without_credentials(url)
    if target.is_file() and _is_already_complete(client, url, target):
        log.info("%s already complete, skipped", target)
        return False

    part = target.with_name(target.name + ".part")
    failures = 0
    with tqdm(
        desc=target.name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not progress,
        leave=True,
    ) as bar:
        while True:
            size_before = _file_size(part)
            try:
                _fetch_once(client, url, part, bar)
                break
            except _TransientError as exc:
                # A dropped connection after real progress is normal on a flaky link: only
                # attempts that got nothing count towards the retry budget.
                if _file_size(part) > size_before:
                    failures = 0
                failures += 1
                allowed = retries
                if exc.kind == "dns":
                    allowed = min(retries, _DNS_RETRIES)
                elif exc.kind == "unreachable":
                    allowed = min(retries, _UNREACHABLE_RETRIES)
                if failures > allowed:
                    raise _exhausted_error(shown_url, exc, failures) from None
                if exc.kind == "dns":
                    delay = min(backoff_s, _DNS_RETRY_DELAY_S)
                elif exc.kind == "unreachable":
                    delay = min(backoff_s * 2 ** (failures - 1), _UNREACHABLE_MAX_DELAY_S)
                else:
                    delay = min(backoff_s * 2 ** (failures - 1), _MAX_BACKOFF_S)
                    if exc.retry_after_s is not None:
                        delay = min(max(delay, exc.retry_after_s), _MAX_BACKOFF_S)
                log.warning(
                    "%s: %s; retry %d/%d in %.2f s", shown_url, exc.reason, failures, allowed, delay
                )
                time.sleep(delay)
    part.replace(target)
    return True


def _exhausted_error(url: str, exc: _TransientError, attempts: int) -> DownloadError:
    if exc.kind in ("dns", "unreachable"):
        host = urlsplit(url).hostname or url
        return DownloadError(
            f"cannot download {url}: the server {host} is unreachable ({exc.reason}) "
            f"after {attempts} attempt(s). Check the network and the URL, or {_IMPORT_HINT}."
        )
    return DownloadError(
        f"cannot download {url}: {exc.reason} (after {attempts} attempt(s)). Run the command "
        f"again to resume, or {_IMPORT_HINT}."
    )


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _is_already_complete(client: httpx.Client, url: str, target: Path) -> bool:
    """Whether a final file present on disk can be kept (compared with the server's size).

    Final names only ever appear through an atomic rename of a complete download, so a
    present file is kept unless the server states a different size.
    """
    try:
        response = client.head(
            url, timeout=min(client.timeout.read or _HEAD_TIMEOUT_S, _HEAD_TIMEOUT_S)
        )
    except httpx.HTTPError as exc:
        log.info("cannot check %s against the server (%s): keeping it", target, exc)
        return True
    length = response.headers.get("content-length")
    if response.status_code != 200 or length is None or not length.isdigit():
        return True
    local = target.stat().st_size
    if int(length) == local:
        return True
    log.warning(
        "%s has %d bytes but the server has %s: downloading it again", target, local, length
    )
    return False


def _fetch_once(client: httpx.Client, url: str, part: Path, bar: tqdm[bytes]) -> None:
    """One GET of `url` into `part`, resuming from its current size.

    Returns once `part` is complete; raises `_TransientError` for what a retry can fix.
    """
    shown_url = url_without_credentials(url)
    offset = _file_size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status == 416 and offset:
                total = _parse_content_range(response.headers.get("content-range"))[2]
                if total == offset:
                    bar.reset(total=total)
                    bar.update(offset)
                    return
                part.unlink(missing_ok=True)
                raise _TransientError(
                    f"partial file of {offset} bytes does not match the server ({total} bytes)"
                )
            if status in _NO_RETRY_STATUSES:
                raise DownloadError(
                    f"cannot download {shown_url}: HTTP {status} {response.reason_phrase}"
                    + (
                        " (check RAKUTEN_HF_TOKEN for a private mirror)"
                        if status in (401, 403)
                        else ""
                    )
                )
            if status == 429 or status >= 500:
                raise _TransientError(
                    f"HTTP {status} {response.reason_phrase}",
                    retry_after_s=_parse_retry_after(response.headers.get("retry-after")),
                )
            if status == 206:
                start, _end, total = _parse_content_range(response.headers.get("content-range"))
                if start != offset:
                    part.unlink(missing_ok=True)
                    raise _TransientError(
                        f"server answered the range from byte {start}, not {offset}"
                    )
                mode = "ab"
                expected = total
            elif status == 200:
                # The server ignored (or does not support) the Range request: start again.
                offset = 0
                mode = "wb"
                expected = _content_length(response)
            else:
                raise DownloadError(
                    f"cannot download {shown_url}: unexpected HTTP {status} "
                    f"{response.reason_phrase}"
                )
            bar.reset(total=expected)
            bar.update(offset)
            with part.open(mode) as fh:
                _write_body(response, fh, bar)
    except httpx.TransportError as exc:
        raise _classify_transport_error(exc) from exc
    except httpx.InvalidURL as exc:
        raise DownloadError(f"invalid URL {shown_url}: {exc}") from exc

    size = _file_size(part)
    if expected is not None and size != expected:
        raise _TransientError(f"connection dropped after {size:,} of {expected:,} bytes")


def _write_body(response: httpx.Response, fh: IO[bytes], bar: tqdm[bytes]) -> None:
    try:
        # No chunk_size: httpx would buffer up to it and lose the buffer if the link drops.
        for chunk in response.iter_bytes():
            fh.write(chunk)
            bar.update(len(chunk))
    finally:
        # Whatever arrived is kept on disk for the next attempt to resume from.
        fh.flush()
        os.fsync(fh.fileno())


def _content_length(response: httpx.Response) -> int | None:
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    if response.headers.get("content-encoding", "identity") != "identity":
        return None  # the length counts encoded bytes, not the ones written
    return int(length)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """`bytes 10-99/100` -> (10, 99, 100); `bytes */100` -> (None, None, 100)."""
    match = _CONTENT_RANGE_RE.match((value or "").strip())
    if match is None:
        raise _TransientError(f"invalid Content-Range header {value!r}")
    start, end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off


def _classify_transport_error(exc: httpx.TransportError) -> _TransientError:
    reason = str(exc) or type(exc).__name__
    if _is_name_resolution_error(exc):
        return _TransientError(reason, kind="dns")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.ProxyError):
        return _TransientError(reason, kind="unreachable")
    return _TransientError(reason)


def _is_name_resolution_error(exc: BaseException) -> bool:
    """Whether `socket.gaierror` (DNS) is somewhere in the exception chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, socket.gaierror):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def extract_images(
    zip_path: Path,
    dest: Path,
    *,
    max_extract_bytes: int,
    max_extract_ratio: float,
    zip_sha256: str | None = None,
    progress: bool = True,
) -> bool:
    """Extract `images.zip` into `dest/images/image_train/` and `dest/images/image_test/`.

    Members may sit under `images/image_train/...` or `image_train/...` (any leading folders
    before `image_train`/`image_test` are dropped); other members are ignored. Every member
    is checked before anything is written; extraction goes to a temporary directory inside
    `dest` that is moved into place at the end, then a marker records the archive's SHA-256
    so that a later run with the same archive skips extraction.

    Args:
        zip_sha256: the archive's SHA-256 when already known (saves hashing it again).

    Returns:
        True when extracted, False when this archive was already extracted.

    Raises:
        DownloadError: not a zip, unsafe member (absolute path, `..`, symbolic link), too
            large in total or in compression ratio, or a member larger than declared.
    """
    zip_path = Path(zip_path)
    dest = Path(dest)
    digest = zip_sha256 or sha256_file(zip_path)
    images_root = dest / IMAGES_ROOT
    marker = images_root / EXTRACT_MARKER
    if _is_extracted(marker, digest, images_root):
        log.info("%s already extracted, skipped", zip_path)
        return False

    archive_size = zip_path.stat().st_size
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(
            f"{zip_path}: not a valid zip archive ({exc}); delete it and download again"
        ) from exc
    with archive:
        members = plan_extraction(
            archive.infolist(),
            archive_size=archive_size,
            max_extract_bytes=max_extract_bytes,
            max_extract_ratio=max_extract_ratio,
            archive_name=str(zip_path),
        )
        for stale in dest.glob(f"{_EXTRACT_TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=_EXTRACT_TMP_PREFIX, dir=dest))
        try:
            budget = min(max_extract_bytes, int(max_extract_ratio * archive_size))
            _extract_members(archive, members, tmp, budget, str(zip_path), progress)
            marker.unlink(missing_ok=True)
            images_root.mkdir(parents=True, exist_ok=True)
            for name in IMAGE_DIR_NAMES:
                staged = tmp / name
                staged.mkdir(exist_ok=True)
                final = images_root / name
                if final.exists():
                    # Move the old copy into the temporary dir: it goes away with it.
                    final.rename(tmp / f"{name}.old")
                staged.rename(final)
            marker_part = marker.with_name(marker.name + ".part")
            marker_part.write_text(f"{digest}  {zip_path.name}\n", encoding="utf-8")
            marker_part.replace(marker)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _is_extracted(marker: Path, digest: str, images_root: Path) -> bool:
    if not marker.is_file():
        return False
    recorded = marker.read_text(encoding="utf-8").split()
    return (
        bool(recorded)
        and recorded[0] == digest
        and all((images_root / name).is_dir() for name in IMAGE_DIR_NAMES)
    )


def plan_extraction(
    infos: Sequence[zipfile.ZipInfo],
    *,
    archive_size: int,
    max_extract_bytes: int,
    max_extract_ratio: float,
    archive_name: str = schema.IMAGES_ZIP,
) -> list[ZipMember]:
    """Check every archive member and map the image files to their place under `images/`.

    Pure: looks at the member headers only.

    Raises:
        DownloadError: a member is unsafe (absolute path, `..`, symbolic link), duplicated,
            the declared sizes exceed `max_extract_bytes` or `max_extract_ratio` times the
            archive size, or no member belongs to `image_train/` or `image_test/`.
    """
    members: list[ZipMember] = []
    seen: set[PurePosixPath] = set()
    declared = 0
    max_by_ratio = max_extract_ratio * archive_size
    for info in infos:
        name = info.filename
        normalized = name.replace("\\", "/")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DownloadError(f"{archive_name}: refusing symbolic link member {name!r}")
        if normalized.startswith("/") or _WINDOWS_DRIVE_RE.match(normalized):
            raise DownloadError(f"{archive_name}: refusing member with absolute path {name!r}")
        parts = [p for p in normalized.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise DownloadError(f"{archive_name}: refusing member with '..' in its path {name!r}")
        if info.is_dir():
            continue
        anchor = next((i for i, p in enumerate(parts[:-1]) if p in IMAGE_DIR_NAMES), None)
        if anchor is None:
            log.debug(
                "%s: ignoring member %r (not under image_train/ or image_test/)", archive_name, name
            )
            continue
        target = PurePosixPath(*parts[anchor:])
        if target in seen:
            raise DownloadError(f"{archive_name}: duplicate member for {target} ({name!r})")
        seen.add(target)
        declared += info.file_size
        if declared > max_extract_bytes:
            raise DownloadError(
                f"{archive_name}: refusing to extract, members declare more than "
                f"{max_extract_bytes:,} bytes (limit max_extract_bytes, at member {name!r})"
            )
        if declared > max_by_ratio:
            raise DownloadError(
                f"{archive_name}: refusing to extract, members declare more than "
                f"{max_extract_ratio:g} times the archive size of {archive_size:,} bytes "
                f"(possible zip bomb, at member {name!r})"
            )
        members.append(ZipMember(info=info, target=target))
    if not members:
        raise DownloadError(
            f"{archive_name}: no file under image_train/ or image_test/ in the archive"
        )
    return members


def _extract_members(
    archive: zipfile.ZipFile,
    members: Sequence[ZipMember],
    out_dir: Path,
    budget: int,
    archive_name: str,
    progress: bool,
) -> None:
    """Write `members` under `out_dir`, counting the bytes really written.

    Headers can lie. zipfile itself stops at the declared size (then fails the CRC check),
    but the limits are enforced here too rather than relying on that.
    """
    written_total = 0
    out_root = out_dir.resolve()
    with tqdm(
        total=sum(m.info.file_size for m in members),
        desc=f"extract {Path(archive_name).name}",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        for member in members:
            out_path = out_dir.joinpath(*member.target.parts)
            # Belt and braces on top of plan_extraction's checks.
            if not out_path.resolve().is_relative_to(out_root):
                raise DownloadError(f"{archive_name}: member {member.info.filename!r} escapes")
            out_path.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with archive.open(member.info) as src, out_path.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        written_total += len(chunk)
                        if written > member.info.file_size or written_total > budget:
                            raise DownloadError(
                                f"{archive_name}: member {member.info.filename!r} expands "
                                f"beyond its declared size or the extraction limit "
                                f"(possible zip bomb)"
                            )
                        dst.write(chunk)
                        bar.update(len(chunk))
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise DownloadError(
                    f"{archive_name}: member {member.info.filename!r} is corrupt or "
                    f"unsupported ({exc}); delete the archive and download again"
                ) from exc
