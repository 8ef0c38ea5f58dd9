"""Rich progress shared by the stages."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, log_path=False)


class RateColumn(ProgressColumn):
    """Items per second, e.g. '412.3 pairs/s'."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


def make_progress(rate_unit: str | None = None) -> Progress:
    """A progress bar with count, rate (when ``rate_unit`` is given), elapsed time and ETA."""
    cols = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate_unit:
        cols.append(RateColumn(rate_unit))
    return Progress(*cols, TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=False)


class Timer:
    """Named wall-clock timings, for manifests."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, message: str | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        if message:
            with console.status(message):
                yield
        else:
            yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        if message:
            console.log(f"{message} done in {self.timings[name]:.1f}s")
