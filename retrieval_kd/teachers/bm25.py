"""BM25 as a scorer: corpus statistics from the dataset, scores for any (query, doc) pair."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kd.data.types import Corpus
from retrieval_kd.errors import RkdError
from retrieval_kd.retrieve.bm25 import BM25Index, BM25Params
from retrieval_kd.teachers.base import Pair, Teacher


class BM25Teacher(Teacher):
    """Scores pairs by documents' BM25 over the prepared corpus (pairs must name corpus ids)."""

    def __init__(self, params: BM25Params | None = None) -> None:
        self.params = params or BM25Params()
        self.index: BM25Index | None = None
        self._row: dict[str, int] = {}
        self._corpus_sha: str | None = None

    def prepare(self, corpus: Corpus) -> None:
        if self._corpus_sha != corpus.fingerprint:
            self.index = BM25Index(corpus, self.params)
            self._row = {d: i for i, d in enumerate(self.index.doc_ids)}
            self._corpus_sha = corpus.fingerprint

    def identity(self) -> dict[str, Any]:
        return {"kind": "bm25", **self.params.model_dump(exclude={"backend"}),
                "library": "bm25s"}

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if self.index is None:
            raise RkdError("BM25 teacher used before prepare(corpus)")
        out = np.zeros(len(pairs), dtype=np.float64)
        by_query: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_query.setdefault(p.query, []).append(i)
        for query, idx in by_query.items():
            full = self.index.score_all(query)
            out[idx] = full[[self._row[pairs[i].docid] for i in idx]]
        return out
