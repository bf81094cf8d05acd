"""The shared rich console and progress-bar factory."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


def print_table(table) -> None:
    """A result table on standard output (``| grep`` works). Off a terminal (a pipe, a log) every
    cell is printed whole: rich's 80-column default would cut the paths a reader came for."""
    import sys

    out = Console()
    if not out.is_terminal:
        out = Console(file=sys.stdout, width=100_000, soft_wrap=True)
        table.expand = False
    out.print(table)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
