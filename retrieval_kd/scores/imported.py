"""Scores imported from another tool's file become a store like any teacher's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from retrieval_kd.artifacts import sha256_file
from retrieval_kd.data.types import Dataset
from retrieval_kd.errors import DataError
from retrieval_kd.scores.candidates import Candidate
from retrieval_kd.scores.store import ScoreStore, score_into_store
from retrieval_kd.teachers.base import Pair, Teacher


class ReplayTeacher(Teacher):
    """Returns scores already known for (qid, docid): the imported file's."""

    def __init__(self, scores: dict[tuple[str, str], float], identity: dict[str, Any]):
        self._scores, self._identity = scores, identity

    def identity(self) -> dict[str, Any]:
        return self._identity

    def score(self, pairs: list[Pair]) -> np.ndarray:
        return np.array([self._scores[(p.qid, p.docid)] for p in pairs], dtype=np.float64)


def import_into_store(table: pa.Table, fmt: str, source: str | Path, ds: Dataset,
                      root: str | Path, name: str | None = None) -> ScoreStore:
    """Store imported rows; every (qid, docid) must exist in ``ds``, labels come from its qrels."""
    qids, dids = table.column("qid").to_pylist(), table.column("docid").to_pylist()
    ranks = table.column("rank").to_pylist() if "rank" in table.column_names else [None] * len(qids)
    missing = [f"{q}/{d}" for q, d in zip(qids, dids)
               if q not in ds.queries.texts or d not in ds.corpus.docs]
    if missing:
        raise DataError(source, f"{len(missing)} rows name queries or documents absent from "
                                f"{ds.name}/{ds.split} (e.g. {', '.join(missing[:5])})")
    seen: set[tuple[str, str]] = set()
    dups = [f"{q}/{d}" for q, d in zip(qids, dids) if (q, d) in seen or seen.add((q, d))]
    if dups:  # two scores for one pair: keeping either would silently lose the other
        raise DataError(source, f"{len(dups)} duplicate (query, document) rows (e.g. {', '.join(dups[:5])})")
    scores = dict(zip(zip(qids, dids), table.column("score").to_pylist()))
    by_q: dict[str, list[Candidate]] = {}
    for q, d, r in zip(qids, dids, ranks):
        by_q.setdefault(q, []).append(Candidate(q, d, r, ds.qrels.get(q, {}).get(d)))
    cands = [c for q in ds.queries.ids() if q in by_q for c in by_q[q]]
    identity = {"kind": "imported", "format": fmt, "name": name or Path(source).name,
                "source_sha256": sha256_file(source)}
    return score_into_store(ds, cands, lambda: ReplayTeacher(scores, identity), identity, root,
                            params={"imported_from": str(source), "format": fmt})
