"""`make install` finds the pinned CPU build of PyTorch on any machine (scripts/pip-extra-index.sh).

The lock pins `torch==2.13.0+cpu`, which only PyTorch's wheel index has. The script adds that
index when pip cannot find the pin in its configured sources, and keeps the extra indexes
already configured (a PIP_EXTRA_INDEX_URL or --extra-index-url replaces them otherwise).
Each case runs pip offline (`PIP_NO_INDEX`) against a local wheel folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "pip-extra-index.sh"
TORCH_PIN = "torch==2.13.0+cpu"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def fake_torch_wheel(folder: Path) -> Path:
    """A minimal valid wheel named like the pinned torch build."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "torch-2.13.0+cpu-py3-none-any.whl"
    info = "torch-2.13.0+cpu.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+cpu\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def run_script(
    tmp_path: Path, *, find_links: Path, config: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "pip.conf"
    config_file.write_text(config, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    clean.update(
        PIP_CONFIG_FILE=str(config_file),
        PIP_FIND_LINKS=str(find_links),
        PIP_NO_INDEX="1",  # offline: only the local folder counts as a configured source
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        # Only `config_file` counts: no user or machine-wide pip config.
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CONFIG_DIRS=str(tmp_path / "xdg"),
        **(env or {}),
    )
    return subprocess.run(
        [str(SCRIPT), sys.executable, TORCH_PIN, TORCH_INDEX],
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
        check=True,
    )


CONFIG = "[global]\nextra-index-url =\n    file:///srv/mirror-a\n    file:///srv/mirror-b\n"


def test_torch_index_is_appended_to_the_configured_ones_when_the_pin_is_not_found(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = run_script(tmp_path, find_links=empty, config=CONFIG)
    assert result.stdout.split() == ["file:///srv/mirror-a", "file:///srv/mirror-b", TORCH_INDEX]
    assert f"{TORCH_PIN} is not in pip's configured sources" in result.stderr


def test_nothing_is_added_when_the_pin_is_available_locally(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    fake_torch_wheel(wheels)
    result = run_script(tmp_path, find_links=wheels, config=CONFIG)
    assert result.stdout.split() == ["file:///srv/mirror-a", "file:///srv/mirror-b"]
    assert result.stderr == ""


def test_an_extra_index_variable_in_force_is_kept_instead_of_the_config(tmp_path: Path) -> None:
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = run_script(
        tmp_path, find_links=empty, config=CONFIG, env={"PIP_EXTRA_INDEX_URL": "file:///srv/c"}
    )
    assert result.stdout.split() == ["file:///srv/c", TORCH_INDEX]


@pytest.mark.parametrize("config", ["", "[global]\ntimeout = 10\n"])
def test_without_configured_extra_indexes_only_the_torch_index_is_printed(
    tmp_path: Path, config: str
) -> None:
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = run_script(tmp_path, find_links=empty, config=config)
    assert result.stdout.strip() == TORCH_INDEX


def test_makefile_passes_the_torch_index_through_the_script() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert f"TORCH_INDEX_URL ?= {TORCH_INDEX}" in makefile
    assert (
        "scripts/pip-extra-index.sh $(PY) \"$$(grep -m1 '^torch==' requirements/lock.txt)\""
        in makefile
    )
    assert 'export PIP_EXTRA_INDEX_URL="$$extra"' in makefile
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "TORCH_INDEX_URL" in readme
