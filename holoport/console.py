"""The terminal the demo and the benchmarks print their tables to."""

from __future__ import annotations

from rich.console import Console


def wide_console() -> Console:
    """A console that keeps tables readable when output goes to a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)
