"""What the README promises about the repository itself: versioned pipeline state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def git_tracked(*paths: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--", *paths], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(listed.stdout.split())


def test_dvc_lock_and_metrics_files_are_meant_for_git() -> None:
    # A DVC project commits dvc.lock and its (cache: false) metrics files after a run; the
    # README says so, and they must not be git-ignored either.
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    metrics = [
        name
        for stage in stages.values()
        for entry in stage.get("metrics", [])
        for name, options in entry.items()
        if options.get("cache") is False
    ]
    assert sorted(metrics) == ["metrics/evaluate.json", "metrics/train.json"]
    # Once committed they stay tracked (the README tells how); never git-ignored.
    tracked = git_tracked("dvc.lock", *metrics)
    assert tracked in (set(), {"dvc.lock", *metrics}), tracked
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "dvc.lock", *metrics],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout == ""
    readme = " ".join((REPO / "docs" / "model.md").read_text(encoding="utf-8").split())
    assert "`git add dvc.lock metrics && git commit`" in readme
