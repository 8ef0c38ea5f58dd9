"""Cross-fitting: score each query with the model that did not train on it.

A teacher member the pipeline itself trains on the train labels would, scoring those very train
queries, hand their labels back to the student. A cross-fitted member has k fold models, fold
j's trained on every query outside fold j (``query_folds: [j, k]``); a query in fold j is scored
by fold j's model, so every score is out-of-fold. A query's fold is ``shard_of(qid, k)``
(crc32 of its id mod k), the function the training side drops a fold's queries by.

Whole queries are routed together, so an ensemble around this teacher still normalises each
query's candidates over scores of one model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kd.scores.candidates import shard_of
from retrieval_kd.teachers.base import Pair, Teacher

FOLD_OF = "crc32(qid) % k"
"""How a query's fold is chosen (recorded in the identity)."""


class CrossFitTeacher(Teacher):
    """Fold ``j``'s teacher scores the pairs of the queries in fold ``j`` (of ``len(folds)``)."""

    def __init__(self, folds: list[Teacher]):
        if len(folds) < 2:
            raise ValueError("a cross-fitted teacher needs at least two fold models")
        self.folds = folds

    @property
    def k(self) -> int:
        return len(self.folds)

    def identity(self) -> dict[str, Any]:
        return {"kind": "crossfit", "k": self.k, "fold_of": FOLD_OF,
                "folds": [t.identity() for t in self.folds]}

    def prepare(self, corpus) -> None:
        for t in self.folds:
            t.prepare(corpus)

    def score(self, pairs: list[Pair]) -> np.ndarray:
        out = np.empty(len(pairs), dtype=np.float64)
        by_fold: dict[int, list[int]] = {}
        for i, p in enumerate(pairs):
            by_fold.setdefault(shard_of(p.qid, self.k), []).append(i)
        for j, idx in sorted(by_fold.items()):
            out[idx] = self.folds[j].score([pairs[i] for i in idx])
        return out

    def close(self) -> None:
        for t in self.folds:
            t.close()
