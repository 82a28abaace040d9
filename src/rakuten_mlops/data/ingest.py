"""Import a local copy of the challenge data (official layout) into the raw layer.

The raw layer is immutable: files are copied atomically (temporary name, then rename),
files already there and identical are skipped, and a file that exists with different
content is an error rather than an overwrite. The result is described by the same
`manifest.json` as a download (`data/manifest.py`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from rakuten_mlops.data.manifest import DirectoryEntry, FileEntry, Manifest, sha256_file
from rakuten_mlops.errors import DataError
from rakuten_mlops.schema import (
    IMAGE_TEST_DIR,
    IMAGE_TRAIN_DIR,
    MANIFEST_FILE,
    TEXT_ORIGIN_FILE,
    X_TEST_FILE,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
)

REQUIRED_FILES = (X_TRAIN_FILE, Y_TRAIN_FILE)
OPTIONAL_FILES = (X_TEST_FILE, TEXT_ORIGIN_FILE)
IMAGE_DIRS = (IMAGE_TRAIN_DIR, IMAGE_TEST_DIR)


def import_dataset(source: Path, dest: Path) -> Manifest:
    """Copy the official files and images from `source` into the raw directory `dest`.

    Idempotent: a second run with the same source copies nothing and leaves
    `manifest.json` untouched.

    Args:
        source: directory with `X_train_update.csv` and `Y_train_CVw08PX.csv` (required),
            `X_test_update.csv`, `text_origin.csv`, `images/image_train/` and
            `images/image_test/` (optional).
        dest: the raw directory (created if needed).

    Raises:
        DataError: the source or a required file is missing, or `dest` already holds a
            file with different content.
    """
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise DataError(f"source directory not found: {source}")
    for name in REQUIRED_FILES:
        if not (source / name).is_file():
            raise DataError(f"required file missing from the source: {source / name}")
    if dest.resolve() == source.resolve():
        raise DataError(f"source and destination are the same directory: {source}")
    dest.mkdir(parents=True, exist_ok=True)

    previous = _read_previous_manifest(dest)
    previous_files = {entry.path: entry for entry in previous.files} if previous else {}
    previous_dirs = {entry.path: entry for entry in previous.directories} if previous else {}

    manifest = Manifest(source=str(source.resolve()))
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        if (source / name).is_file():
            manifest.files.append(_import_file(source, dest, name, previous_files.get(name)))
    for rel_dir in IMAGE_DIRS:
        if (source / rel_dir).is_dir():
            previous_entry = previous_dirs.get(rel_dir.as_posix())
            manifest.directories.append(_import_directory(source, dest, rel_dir, previous_entry))

    if previous is not None and _same_content(previous, manifest):
        return previous
    manifest.write(dest)
    return manifest


def _read_previous_manifest(dest: Path) -> Manifest | None:
    if not (dest / MANIFEST_FILE).is_file():
        return None
    try:
        return Manifest.read(dest)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{dest / MANIFEST_FILE}: unreadable manifest ({exc})") from exc


def _same_content(old: Manifest, new: Manifest) -> bool:
    """Same source and same files: the manifest (and its date) need not be rewritten."""
    return (
        old.source == new.source
        and [asdict(f) for f in old.files] == [asdict(f) for f in new.files]
        and [asdict(d) for d in old.directories] == [asdict(d) for d in new.directories]
    )


def _import_file(source: Path, dest: Path, name: str, previous: FileEntry | None) -> FileEntry:
    src, dst = source / name, dest / name
    entry = FileEntry(path=name, size=src.stat().st_size, sha256=sha256_file(src))
    if dst.is_file():
        # The manifest saves re-hashing the destination when it already vouches for it.
        vouched = previous is not None and previous == entry and dst.stat().st_size == entry.size
        if not vouched and not _same_file(dst, entry.size, entry.sha256):
            raise DataError(_immutable_message(dst, src))
        return entry
    _copy_atomic(src, dst)
    return entry


def _import_directory(
    source: Path, dest: Path, rel_dir: PurePosixPath, previous: DirectoryEntry | None
) -> DirectoryEntry:
    src_dir, dst_dir = source / rel_dir, dest / rel_dir
    names = _list_files(src_dir)
    lines: list[str] = []
    total = 0
    # Destination files of the right size, left unhashed while the manifest may vouch for them.
    trusted: list[tuple[str, int, str]] = []
    for rel in tqdm(names, desc=f"import {rel_dir}", unit="file", leave=False):
        src, dst = src_dir / rel, dst_dir / rel
        size, digest = src.stat().st_size, sha256_file(src)
        lines.append(f"{rel} {digest}")
        total += size
        if not dst.exists():
            _copy_atomic(src, dst)
        elif previous is not None and dst.is_file() and dst.stat().st_size == size:
            trusted.append((rel, size, digest))
        elif not _same_file(dst, size, digest):
            raise DataError(_immutable_message(dst, src))
    entry = _directory_entry(rel_dir, lines, total)

    extra = sorted(set(_list_files(dst_dir)) - set(names))
    if extra:
        raise DataError(
            f"{dst_dir} holds {len(extra)} files that are not in {src_dir} "
            f"(e.g. {', '.join(extra[:3])}); the raw layer is immutable: "
            "import into an empty directory instead"
        )
    if trusted and previous != entry:
        # The manifest does not describe this content: check the skipped files for real.
        for rel, size, digest in tqdm(trusted, desc=f"verify {rel_dir}", unit="file", leave=False):
            if not _same_file(dst_dir / rel, size, digest):
                raise DataError(_immutable_message(dst_dir / rel, src_dir / rel))
    return entry


def _list_files(directory: Path) -> list[str]:
    """Files under `directory`, relative POSIX paths, sorted (the manifest's order)."""
    if not directory.is_dir():
        return []
    found: list[str] = []
    for current, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(".part"):  # leftovers of an interrupted copy, never data
                continue
            found.append((Path(current) / name).relative_to(directory).as_posix())
    return sorted(found)


def _directory_entry(rel_dir: PurePosixPath, lines: list[str], total: int) -> DirectoryEntry:
    """Aggregate entry, computed like `Manifest.add_directory` from hashes already known."""
    return DirectoryEntry(
        path=rel_dir.as_posix(),
        files=len(lines),
        size=total,
        sha256=hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest(),
    )


def _same_file(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def _immutable_message(dst: Path, src: Path) -> str:
    return (
        f"{dst} already exists with content different from {src}; the raw layer is "
        "immutable: remove it deliberately or import into another directory"
    )


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy to a temporary name next to `dst`, then rename: readers never see half a file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot copy {src} to {dst}: {exc}") from exc
