"""Static files of the console, served under a content hash so browsers may cache them forever.

`asset_url("console.css")` is `/console/static/<sha256[:12]>/console.css`: a changed file
gets a new URL, so the answer carries `Cache-Control: public, max-age=31536000, immutable`.
A request for an old hash still gets the current file, but without the long cache.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import lru_cache
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/console/static"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@lru_cache(maxsize=1)
def asset_versions() -> dict[str, str]:
    """Every static file (relative path) and the first 12 hex digits of its SHA-256."""
    return {
        path.relative_to(STATIC_DIR).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(STATIC_DIR.rglob("*"))
        if path.is_file()
    }


def asset_url(name: str) -> str:
    """The versioned URL of a static file.

    Raises:
        KeyError: no such file in the console's static folder.
    """
    return f"{STATIC_PREFIX}/{asset_versions()[name]}/{name}"


def asset_file(name: str) -> Path | None:
    """The file of a known asset name (None for anything else: no path tricks)."""
    if name not in asset_versions():
        return None
    return STATIC_DIR / name


def media_type(path: Path) -> str:
    """The Content-Type of a static file."""
    return (
        _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
