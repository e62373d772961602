"""What the long loops (extraction's candidates, distillation's steps) show: in a terminal, a live bar with its
counts and times and a line of state under it; elsewhere (a log file, CI), plain lines flushed as they come."""
from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


def bar(label: str = "{task.description}") -> Progress:
    """A progress bar: the label, the bar, done/total, elapsed and remaining time."""
    return Progress(TextColumn(label), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn())


def live(progress: Progress, state: Text, console: Console | None = None) -> Live:
    """`progress` with the `state` line under it, started (stop it with `.stop()`)."""
    shown = Live(Group(progress, state), console=console, refresh_per_second=4)
    shown.start()
    return shown


def line(text: str, console: Console | None = None) -> None:
    """One plain line, flushed: a log file shows it now, not when the buffer fills."""
    console = console or Console()
    console.print(text, highlight=False, soft_wrap=True)
    console.file.flush()
