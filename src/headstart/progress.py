"""What the user sees while long work runs: a bar on a terminal, a plain line every few seconds elsewhere (a log
file, CI, a pipe), nothing with HEADSTART_PROGRESS=0; and Lightning's training loop the same way, without its own
chatter (device lines, tips, `v_num`).

HEADSTART_PROGRESS: "0" turns progress off; anything else (the default "1") shows it, as a bar when stderr is a
terminal and as plain lines otherwise (under torchrun on rank 0 only). HEADSTART_PROGRESS_INTERVAL: seconds
between plain lines (default 10).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

DEFAULT_INTERVAL = 10.0
# The loggers Lightning's rank_zero_info writes through ("GPU available: ...", "💡 Tip: ...", "Using bfloat16 ...").
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def progress_enabled() -> bool:
    """Progress is shown at all: HEADSTART_PROGRESS is not "0", and this process is not one of the other ranks of a
    torchrun job (rank 0 alone shows it, of its share of the work, so that a job has one bar, not one per rank)."""
    from . import distributed

    return os.environ.get("HEADSTART_PROGRESS", "1").strip() != "0" and (not distributed.launched()
                                                                        or distributed.is_main())


def progress_on_terminal() -> bool:
    """Progress is shown as a live bar: it is enabled and stderr is a terminal."""
    return progress_enabled() and sys.stderr.isatty()


def line_interval() -> float:
    """Seconds between plain progress lines (HEADSTART_PROGRESS_INTERVAL; at least 0.1)."""
    try:
        return max(0.1, float(os.environ.get("HEADSTART_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _clock() -> float:
    """The time progress lines measure with (a test replaces it)."""
    return time.monotonic()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLines:
    """Progress as a plain line at most every `interval` seconds: what, done/total, rate and time left; and a last
    line at the end if any was written (work shorter than one interval stays silent). Hand-written because tqdm and
    Rich redraw one line in place, which a log file or CI shows as one line per redraw or none at all."""

    def __init__(self, desc: str, total: int, unit: str = "it", interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] | None = None, stream: TextIO | None = None, done: int = 0):
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.clock, self.stream = clock or _clock, stream
        self.done = self.first = done  # `done`: already done before (a resumed run); the rate counts from here
        self.started = self.last = self.clock()
        self.lines = 0

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr  # looked up when written: a redirected stderr is honoured
        stream.write(text + "\n")
        stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval and (not self.total or self.done < self.total):  # total 0: unknown
            self.last = now
            self.lines += 1
            self._write(self.line(now))

    def line(self, now: float) -> str:
        """e.g. `embedding: 30/100 img (30%), 3.0 img/s, about 23s left`."""
        rate = (self.done - self.first) / max(now - self.started, 1e-9)
        text = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({self.done / self.total:.0%})" if self.total \
            else f"{self.desc}: {self.done:,} {self.unit}"
        text += f", {rate:,.1f} {self.unit}/s"
        if rate > 0 and self.done < self.total:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def finish(self) -> None:
        """The closing line (done, time taken), only after progress lines: short work prints nothing."""
        if self.lines:
            seconds = self.clock() - self.started
            done = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
            self._write(f"{self.desc}: {done} {self.unit} in {_duration(seconds)}, "
                        f"{(self.done - self.first) / max(seconds, 1e-9):,.1f} {self.unit}/s")


@contextmanager
def progress_bar(desc: str, total: int, unit: str = "it", ranks: int = 1) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: a Rich bar with throughput on a terminal, plain lines elsewhere, nothing when off.

    `ranks` > 1: the work is shared by that many torchrun ranks in equal shares (within one item) and `total` is
    this rank's; rank 0's bar then shows the whole job, its own progress counted once per rank."""
    if not progress_enabled():
        yield lambda n: None
        return
    if ranks > 1:
        with progress_bar(f"{desc} ({ranks} processes)", total * ranks, unit) as advance:
            yield lambda n: advance(n * ranks)
        return
    if not sys.stderr.isatty():
        lines = ProgressLines(desc, total, unit, line_interval())
        yield lines.advance
        lines.finish()
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


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hold Lightning's informational lines (GPU/TPU available, mixed precision, tips advertising its services,
    "`Trainer.fit` stopped") at WARNING while the block runs; warnings and errors still show. Lightning resets its
    logger's level when it is imported, so the levels are set here, around the trainer, and restored after."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def lightning_progress(desc: str, unit: str = "steps") -> tuple[list[Any], bool]:
    """(callbacks, enable_progress_bar) for a Lightning Trainer, following the same rules as `progress_bar`: on a
    terminal Lightning's bar without the logger's `v_num`; elsewhere a plain line every few seconds over all the
    planned optimizer steps (a time budget or early stopping may end training sooner); nothing when off."""
    if not progress_enabled():
        return [], False
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar

    if sys.stderr.isatty():
        class Bar(TQDMProgressBar):
            """Lightning's bar less `v_num` (the CSV logger's version number, which means nothing to a user)."""

            def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
                metrics = super().get_metrics(trainer, pl_module)
                metrics.pop("v_num", None)
                return metrics

        return [Bar()], True

    class Lines(L.Callback):
        """Optimizer steps as `ProgressLines`, with the epoch in the description."""

        def __init__(self) -> None:
            self.lines: ProgressLines | None = None

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            total = trainer.estimated_stepping_batches
            planned = int(total) if total != float("inf") else 0
            self.lines = ProgressLines(desc, planned, unit, line_interval(), done=int(trainer.global_step))

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
            if self.lines is not None:
                self.lines.desc = f"{desc} (epoch {trainer.current_epoch + 1}/{trainer.max_epochs})"
                self.lines.advance(int(trainer.global_step) - self.lines.done)

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if self.lines is not None:
                self.lines.desc = desc
                self.lines.finish()

    return [Lines()], False


__all__ = ["ProgressLines", "lightning_progress", "progress_bar", "progress_enabled", "progress_on_terminal",
           "quiet_lightning"]
