"""Progress bars on a terminal, silence elsewhere (logs, CI, tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def progress_enabled() -> bool:
    return sys.stderr.isatty() and os.environ.get("HEADSTART_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(desc: str, total: int, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; shows a Rich bar with throughput when stderr is a terminal."""
    if not progress_enabled():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} {unit}/s" if task.speed else "")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(desc, total=total)
        yield lambda n: progress.advance(task, n)
