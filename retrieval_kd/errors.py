"""Errors that the CLI prints as one clear line."""

from __future__ import annotations

from pathlib import Path


class RkdError(Exception):
    """Base class for every error retrieval-kd reports to a user."""


class DataError(RkdError):
    """Bad input data: names the file, the line (when known) and the problem."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class NotFoundError(RkdError):
    """A dataset, model or artifact that is not where it was looked for."""


class IntegrityError(RkdError):
    """A file whose checksum does not match what was recorded for it."""
