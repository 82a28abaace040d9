"""The raw-layer manifest: what was imported or downloaded, with sizes and SHA-256.

`manifest.json` sits at the root of the raw directory. Single files (CSVs, the images
archive) get one entry each; an image directory gets one aggregate entry (file count,
bytes, and a tree digest over the sorted `(name, sha256)` pairs) so the manifest stays
small for the 84,916 training images of the full dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rakuten_mlops.schema import MANIFEST_FILE

_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_named_files(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over (name, content) pairs, in the order given, each part NUL-terminated.

    Raises:
        FileNotFoundError: a file is missing.
    """
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode("utf-8"))
        digest.update(b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of the raw layer."""

    path: str  # relative to the raw dir, POSIX separators
    size: int
    sha256: str


@dataclass(frozen=True)
class DirectoryEntry:
    """One directory of files (images), summarised."""

    path: str
    files: int
    size: int
    sha256: str  # digest over the sorted "name sha256" lines


@dataclass
class Manifest:
    """What the raw layer holds and where it came from."""

    source: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    files: list[FileEntry] = field(default_factory=list)
    directories: list[DirectoryEntry] = field(default_factory=list)

    def add_file(self, root: Path, path: Path) -> FileEntry:
        """Hash `path` (inside `root`) and record it."""
        entry = FileEntry(
            path=path.relative_to(root).as_posix(),
            size=path.stat().st_size,
            sha256=sha256_file(path),
        )
        self.files.append(entry)
        return entry

    def add_directory(self, root: Path, directory: Path) -> DirectoryEntry:
        """Hash every file of `directory` (recursively, inside `root`) into one entry."""
        lines: list[str] = []
        total = 0
        for current, _dirs, names in os.walk(directory):
            for name in names:
                file_path = Path(current) / name
                total += file_path.stat().st_size
                rel = file_path.relative_to(directory).as_posix()
                lines.append(f"{rel} {sha256_file(file_path)}")
        lines.sort()
        entry = DirectoryEntry(
            path=directory.relative_to(root).as_posix(),
            files=len(lines),
            size=total,
            sha256=hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        )
        self.directories.append(entry)
        return entry

    def write(self, root: Path) -> Path:
        """Write `manifest.json` into `root` atomically."""
        target = root / MANIFEST_FILE
        tmp = target.with_suffix(".json.part")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def read(cls, root: Path) -> Manifest:
        """Read `manifest.json` from `root`."""
        data = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(
            source=data["source"],
            created_at=data["created_at"],
            files=[FileEntry(**f) for f in data.get("files", [])],
            directories=[DirectoryEntry(**d) for d in data.get("directories", [])],
        )

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        lines = [f"source: {self.source}"]
        lines += [f"  {f.path}: {f.size:,} bytes sha256={f.sha256[:12]}" for f in self.files]
        lines += [
            f"  {d.path}/: {d.files:,} files, {d.size:,} bytes sha256={d.sha256[:12]}"
            for d in self.directories
        ]
        return "\n".join(lines)
