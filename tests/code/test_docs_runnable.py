"""The bash blocks of the README and docs/ marked `<!-- docs-check: run -->` are run as written,
against a throwaway setup (a fresh service database, MLflow store and data folders), and must
succeed (`make docs-check`). Blocks that start servers or need a cluster are not marked; the
tests of tests/deploy and tests/orchestration run those."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = "<!-- docs-check: run -->"
RUNNABLE = re.compile(re.escape(MARK) + r"\s*\n```bash[^\n]*\n(.*?)^```", re.M | re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    """(page and block number, block) of every marked bash block."""
    blocks = []
    for page in PAGES:
        for number, body in enumerate(RUNNABLE.findall(page.read_text(encoding="utf-8")), 1):
            blocks.append((f"{page.relative_to(REPO)}#{number}", body))
    return blocks


def test_the_docs_mark_blocks_to_run() -> None:
    pages = {name.split("#")[0] for name, _ in runnable_blocks()}
    assert {"docs/security.md", "docs/retraining.md", "docs/service.md"} <= pages


@pytest.mark.parametrize(("name", "block"), runnable_blocks(), ids=lambda v: str(v)[:40])
def test_a_marked_block_runs(name: str, block: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAKUTEN_DATABASE_URL": f"sqlite:///{tmp_path}/service.db",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "RAKUTEN_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "mlartifacts"),
        "RAKUTEN_RAW_DIR": str(tmp_path / "raw"),
        "RAKUTEN_PROCESSED_DIR": str(tmp_path / "processed"),
        "RAKUTEN_REPORTS_DIR": str(tmp_path / "reports"),
        "PASSWORD": "a long docs-check passphrase",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name} failed:\n{block}\n{result.stdout}\n{result.stderr}"
