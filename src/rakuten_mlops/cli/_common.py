"""Helpers shared by the CLI commands: error reporting and console output."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from rakuten_mlops.config import get_settings
from rakuten_mlops.errors import RakutenError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn `RakutenError` into a one-line message on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RakutenError as exc:
            err_console.print(
                f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper


def configure_logging() -> None:
    """Log to stderr at the level of the settings."""
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # re-bind to the current stderr when the app runs more than once
    )
    # One INFO line per HTTP request would drown the progress bars.
    logging.getLogger("httpx").setLevel(logging.WARNING)
