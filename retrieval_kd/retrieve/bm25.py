"""BM25 through bm25s, the embedded default first stage."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval_kd.data.types import Corpus, Queries, Run


class BM25Params(BaseModel):
    """BM25 parameters; defaults are Anserini's BEIR settings (k1=0.9, b=0.4, Lucene idf)."""

    model_config = ConfigDict(extra="forbid")
    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stemmer: str | None = "english"
    """A PyStemmer language, or None for no stemming."""
    stopwords: str | None = "en"
    """A bm25s stopword list name ('en', 'de', ...), or None to keep every token."""
    backend: Literal["bm25s", "pyserini"] = "bm25s"


def _stemmer(lang: str | None):
    if lang is None:
        return None
    import Stemmer

    return Stemmer.Stemmer(lang)


class BM25Index:
    """An in-memory bm25s index over a corpus (title and text joined)."""

    def __init__(self, corpus: Corpus, params: BM25Params | None = None, progress: bool = False):
        import bm25s

        self.params = params or BM25Params()
        self.doc_ids = corpus.ids()
        self._stem = _stemmer(self.params.stemmer)
        tokens = bm25s.tokenize(
            corpus.texts(), stopwords=self.params.stopwords or [], stemmer=self._stem,
            show_progress=progress,
        )
        self._bm25 = bm25s.BM25(k1=self.params.k1, b=self.params.b, method=self.params.method)
        self._bm25.index(tokens, show_progress=progress)

    def score_all(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every document, in corpus order."""
        import bm25s

        toks = bm25s.tokenize([query], stopwords=self.params.stopwords or [], stemmer=self._stem,
                              return_ids=False, show_progress=False)[0]
        return np.asarray(self._bm25.get_scores(toks), dtype=np.float64)

    def search(self, queries: Queries, k: int = 1000, progress: bool = False) -> Run:
        """Top-``k`` documents per query; queries that match nothing get an empty ranking."""
        import bm25s

        k = min(k, len(self.doc_ids))
        qids = queries.ids()
        toks = bm25s.tokenize(
            list(queries.texts.values()), stopwords=self.params.stopwords or [],
            stemmer=self._stem, return_ids=False, show_progress=False,
        )
        idx, scores = self._bm25.retrieve(toks, k=k, show_progress=progress, n_threads=0)
        run: Run = {}
        for qi, qid in enumerate(qids):
            keep = scores[qi] > 0
            run[qid] = {self.doc_ids[int(d)]: float(s)
                        for d, s in zip(idx[qi][keep], np.asarray(scores[qi])[keep])}
        return run


def bm25_search(corpus: Corpus, queries: Queries, params: BM25Params | None = None,
                k: int = 1000, progress: bool = False) -> Run:
    """Index ``corpus`` and return the top-``k`` run for ``queries`` with the chosen backend."""
    params = params or BM25Params()
    if params.backend == "pyserini":
        from retrieval_kd.retrieve.pyserini_bm25 import pyserini_search

        return pyserini_search(corpus, queries, params, k=k)
    return BM25Index(corpus, params, progress=progress).search(queries, k=k, progress=progress)
