"""Exact top-k, in one place.

- :func:`flat_search` / :func:`topk_run`: the exact inner-product top-k of query vectors over a
  document matrix (FAISS ``IndexFlatIP``; GPU when faiss-gpu sees one), for dense retrieval
  without a built index.
- :func:`ranked` / :func:`top_k`: the best of scored candidate documents (a SPLADE query's
  accumulated scores, ColBERT's MaxSim over its candidates), ties broken by document number so
  a ranking is the same on every run.
"""

from __future__ import annotations

import numpy as np

from retrieval_kd.data.types import Run


def flat_search(doc_emb: np.ndarray, query_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with FAISS (IndexFlatIP); GPU when faiss-gpu sees one."""
    import faiss

    index = faiss.IndexFlatIP(doc_emb.shape[1])
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(doc_emb)
    scores, idx = index.search(query_emb, min(k, doc_emb.shape[0]))
    return scores, idx


def topk_run(doc_ids: list[str], doc_emb: np.ndarray, qids: list[str], q_emb: np.ndarray,
             k: int) -> Run:
    """:func:`flat_search` as a run: each query's ``k`` best documents by inner product."""
    scores, idx = flat_search(doc_emb, q_emb, k)
    return {qid: {doc_ids[j]: float(s) for j, s in zip(idx[i], scores[i]) if j >= 0}
            for i, qid in enumerate(qids)}


def ranked(docs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Order of ``docs`` by descending score, ties by document number."""
    return np.lexsort((docs, -scores))


def top_k(docs: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of ``docs`` by score, ties broken by document number: (docs, scores).

    Where there are more than ``k`` candidates, those below the ``k``-th best score are dropped
    first (a linear-time partition; ties at the boundary are kept), so only a short list is
    sorted; the result is :func:`ranked`'s first ``k``."""
    if 0 < k < len(scores):
        kth = np.partition(-scores, k - 1)[k - 1]  # minus the k-th best score
        if not np.isnan(kth):  # fewer than k comparable scores: sort them all
            keep = np.flatnonzero(scores >= -kth)
            docs, scores = docs[keep], scores[keep]
    order = ranked(docs, scores)[:k]
    return docs[order], scores[order]
