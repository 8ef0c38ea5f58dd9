"""The teacher interface: score a batch of (query, passage) pairs, and say who you are.

A teacher's *identity* (``identity()``) is everything that can change its scores: model id
and weight sha256, template, max length, dtype, normalisation. It goes into the score
store's manifest and into the store id, so the same request always finds the same store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Pair:
    """One candidate to score: ids for bookkeeping, texts for the model."""

    qid: str
    docid: str
    query: str
    passage: str


def add_counts(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Add ``more``'s counts into ``into`` (a teacher's stats, e.g. listwise repairs); returns it."""
    for k, v in more.items():
        into[k] = into.get(k, 0) + int(v)
    return into


class Teacher(ABC):
    """Scores (query, passage) pairs; higher means more relevant."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that determines the scores (JSON-serialisable, stable across runs)."""

    @abstractmethod
    def score(self, pairs: list[Pair]) -> np.ndarray:
        """Scores for ``pairs`` in order, as float64 of shape (len(pairs),)."""

    def score_chunks(self, chunks: Iterable[tuple[Hashable, list[Pair]]]
                     ) -> Iterator[tuple[Hashable, np.ndarray]]:
        """``(key, scores)`` of each ``(key, pairs)`` chunk, in any order. Default: one chunk after
        another with :meth:`score`; a teacher spread over workers (``scores/ray_scoring.py``)
        scores several at once and hands each back as it finishes."""
        for key, pairs in chunks:
            yield key, self.score(pairs)

    def take_stats(self) -> dict[str, int] | None:
        """Counts about the scores handed back since the last call (e.g. a listwise teacher's
        permutation repairs), kept by the score store with the chunk just scored; default none."""
        return None

    def prepare(self, corpus) -> None:
        """Called once with the dataset corpus before scoring (BM25 needs its statistics)."""

    def close(self) -> None:
        """Release servers, threads or memory."""
