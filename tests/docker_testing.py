"""Helpers of the tests that drive a real Docker engine (images, compose)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Debian's docker.io client (BuildKit without buildx), else whatever `docker` is.
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def run(*args: str, timeout: float = 1800, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """A command's result (never raises on a non-zero exit: tests assert on it)."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
