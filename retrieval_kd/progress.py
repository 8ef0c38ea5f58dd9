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
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, log_path=False)


def make_progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


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
