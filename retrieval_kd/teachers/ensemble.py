"""Ensembles: several teachers, per-query normalisation, weighted sum.

Normalisation is computed over each query's candidates in the scored batch; the store
always hands a teacher whole queries, so a query's candidates are normalised together.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from retrieval_kd.teachers.base import Pair, Teacher

Normalization = Literal["none", "minmax", "zscore", "rank"]


def normalize(scores: np.ndarray, how: Normalization) -> np.ndarray:
    """Normalise one query's scores: min-max to [0, 1], z-score, or rank mapped to [0, 1]
    (best = 1). Scores with exactly zero spread become 0 (minmax, zscore); equal floats whose
    computed std is a rounding residue (``[0.1] * 3``: ~1e-17) z-score to -1s, a shift uniform
    within the query, so orders and margins are unaffected (kept: stored scores depend on it).
    Rank ties keep input order."""
    s = np.asarray(scores, dtype=np.float64)
    if how == "none" or s.size == 0:
        return s
    if how == "minmax":
        span = s.max() - s.min()
        return (s - s.min()) / span if span > 0 else np.zeros_like(s)
    if how == "zscore":
        sd = s.std()
        return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    if how == "rank":
        if s.size == 1:
            return np.ones(1)
        ranks = np.empty(s.size)
        ranks[np.argsort(-s, kind="stable")] = np.arange(s.size)
        return 1.0 - ranks / (s.size - 1)
    raise ValueError(f"unknown normalisation '{how}'")


def per_query(qids: list[str], scores: np.ndarray, how: Normalization) -> np.ndarray:
    out = np.empty(len(qids), dtype=np.float64)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(qids):
        groups.setdefault(q, []).append(i)
    for idx in groups.values():
        out[idx] = normalize(scores[idx], how)
    return out


class EnsembleTeacher(Teacher):
    """Weighted sum of per-query-normalised member scores."""

    def __init__(self, members: list[tuple[Teacher, float]], normalization: Normalization = "zscore"):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members, self.normalization = members, normalization

    def identity(self) -> dict[str, Any]:
        return {"kind": "ensemble", "normalization": self.normalization,
                "members": [{"weight": w, "teacher": t.identity()} for t, w in self.members]}

    def prepare(self, corpus) -> None:
        for t, _ in self.members:
            t.prepare(corpus)

    def score(self, pairs: list[Pair]) -> np.ndarray:
        qids = [p.qid for p in pairs]
        total = np.zeros(len(pairs), dtype=np.float64)
        for t, w in self.members:
            total += w * per_query(qids, t.score(pairs), self.normalization)
        return total

    def close(self) -> None:
        for t, _ in self.members:
            t.close()
