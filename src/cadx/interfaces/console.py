"""What every ``cadx`` command shares: the consoles, logging set-up, and the rule that bad input ends with one line
naming the file and the reason (exit code 2), never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from cadx.data.errors import DatasetError, UnreadableImageError
from cadx.engine.meta import CheckpointError

console = Console()
err_console = Console(stderr=True)
USER_ERRORS = (DatasetError, CheckpointError, UnreadableImageError, ValueError, FileNotFoundError)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)])
    for noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends with a one-line message naming the file and the reason, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
