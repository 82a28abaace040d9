"""The commands the README and docs/ show exist as written: every `make` target is in the
Makefile, every `rakuten-mlops` command is in the CLI with the options the line gives it, and
every script or file of the repository they run is there. A renamed command, target or
option fails here, not in a user's shell (`make docs-check`)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import typer

from rakuten_mlops.cli import app

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")


def shell_lines(page: Path) -> list[str]:
    """The command lines of a page: its bash blocks (continuations joined, comments dropped)
    and its inline code that starts with `make ` or `rakuten-mlops `."""
    text = page.read_text(encoding="utf-8")
    lines: list[str] = []
    for language, body in FENCE.findall(text):
        if language not in {"bash", "sh", "shell", ""}:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    prose = FENCE.sub("", text)
    lines += [c for c in INLINE.findall(prose) if c.startswith(("make ", "rakuten-mlops "))]
    return lines


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def invocations(page: Path, program: str) -> Iterator[tuple[str, list[str]]]:
    """Each call of `program` on the page: its line, and the words after the program name
    (`make X`, `nice -n 10 make X`, `a && rakuten-mlops b | c`...)."""
    for line in shell_lines(page):
        for segment in re.split(r"&&|\|\||;|\|", line):
            words = _words(segment.strip())
            if program in words:
                yield line, words[words.index(program) + 1 :]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, re.M))


def cli_command(words: list[str]) -> tuple[Any, list[str]] | None:
    """The CLI command the words after `rakuten-mlops` name, and its path; None if none."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    for word in words:
        if not hasattr(command, "get_command") or word.startswith("-"):  # a group's command
            break
        sub = command.get_command(click.Context(command), word)
        if sub is None:
            return (command, path) if path else None
        command, path = sub, [*path, word]
    return command, path


def _options(command: Any) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_make_targets_exist(page: Path) -> None:
    targets = make_targets()
    missing = []
    for line, words in invocations(page, "make"):
        for word in words:  # targets, after options and VAR=value
            if word.startswith("-") or "=" in word:
                continue
            if not re.fullmatch(r"[a-z][\w-]*", word):
                break
            if word not in targets:
                missing.append(f"make {word}  ({line})")
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_cli_commands_and_options_exist(page: Path) -> None:
    problems = []
    for line, rest in invocations(page, "rakuten-mlops"):
        if not rest or rest[0] in {"--help", "--version"} or rest[0].startswith("<"):
            continue  # the CLI's own options, or a placeholder (`rakuten-mlops <command>`)
        found = cli_command(rest)
        if found is None or not found[1]:
            problems.append(f"no command: rakuten-mlops {' '.join(rest[:2])}  ({line})")
            continue
        command, path = found
        options = _options(command)
        for word in rest[len(path) :]:
            # `--opt`, `--opt=value` and the `[--opt/--no-opt]` of a synopsis.
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", word):
                if option not in options and option != "--help":
                    problems.append(f"rakuten-mlops {' '.join(path)} {option}  ({line})")
    assert problems == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_scripts_and_files_they_run_exist(page: Path) -> None:
    missing = []
    for line in shell_lines(page):
        for word in _words(line):
            in_repo = re.fullmatch(r"(scripts|bench|deploy|orchestration|docker)/[\w./-]+", word)
            if in_repo and not (REPO / word).exists():
                missing.append(f"{word}  ({line})")
    assert missing == []
