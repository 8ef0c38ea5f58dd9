"""Late interaction (ColBERT): stored token embeddings, candidate generation, exact MaxSim.

Layout: ``tokens.npy`` holds every document token vector (float16, rows grouped by
document), ``doc_offsets.npy`` the row range of each document (``offsets[i]:offsets[i+1]``),
and ``candidates.faiss`` a FAISS index over the same token vectors.

Search (as in ColBERT v1's end-to-end retrieval): each query token fetches its
``k_token`` nearest document tokens from the FAISS index; the documents owning them are the
candidates; each candidate is then scored exactly, ``MaxSim(q, d) = sum_i max_j q_i . d_j``
over its stored (float16) token vectors, and the top ``k`` kept. This is the ``exact`` engine;
the ``plaid`` engine (:mod:`retrieval_kd.index.plaid`) prunes the candidates by centroid and
token-code scores first and scores only the most promising ones exactly. The token vectors are
stored uncompressed in float16 either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval_kd.retrieve.topk import top_k


def token_rows(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the given documents' tokens, concatenated, and each document's count."""
    starts, ends = offsets[docs], offsets[docs + 1]
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), lens
    seg_start = np.cumsum(lens) - lens
    rows = np.arange(total, dtype=np.int64) - np.repeat(seg_start - starts, lens)
    return rows, lens


def maxsim(q: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray,
           block_tokens: int = 1 << 18) -> np.ndarray:
    """Exact MaxSim of query token matrix ``q`` against each document in ``docs`` (float32).

    Documents without tokens score 0. Work is done in blocks of about ``block_tokens`` rows
    so that a long candidate list never materialises all its vectors at once.
    """
    docs = np.asarray(docs, dtype=np.int64)
    out = np.zeros(len(docs), dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    lens_all = offsets[docs + 1] - offsets[docs]
    i = 0
    while i < len(docs):
        # take documents until the block is full (always at least one)
        cum = np.cumsum(lens_all[i:])
        j = i + max(1, int(np.searchsorted(cum, block_tokens, side="right")))
        sel = docs[i:j]
        rows, lens = token_rows(offsets, sel)
        nz = lens > 0
        if nz.any():
            d = np.asarray(tokens[rows], dtype=np.float32)
            s = q @ d.T  # (n_query_tokens, rows)
            seg = (np.cumsum(lens) - lens)[nz]
            per_doc = np.maximum.reduceat(s, seg, axis=1).sum(axis=0)
            block = np.zeros(len(sel), dtype=np.float32)
            block[nz] = per_doc
            out[i:j] = block
        i = j
    return out


def tokens_to_docs(offsets: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """Document numbers owning the given token rows (``-1`` rows, FAISS's 'none', dropped)."""
    t = token_ids[token_ids >= 0]
    return np.searchsorted(offsets, t, side="right") - 1


class LateIndex:
    """A ColBERT index folder opened for search (token vectors memory-mapped)."""

    def __init__(self, folder: str | Path, cand_index=None, mmap: bool = True) -> None:
        from retrieval_kd.index.files import expect_count, read_npy

        folder = Path(folder)
        self.tokens = read_npy(folder / "tokens.npy", mmap)
        self.offsets = read_npy(folder / "doc_offsets.npy", mmap=False)
        self.n_docs = len(self.offsets) - 1
        total = int(self.offsets[-1]) if len(self.offsets) else -1
        expect_count(folder / "tokens.npy", len(self.tokens), total, "token vectors")
        if cand_index is not None:
            expect_count(folder / "candidates.faiss", int(cand_index.ntotal), total, "token vectors")
        self.cand_index = cand_index

    def candidates(self, q: np.ndarray, k_token: int) -> np.ndarray:
        if self.cand_index is None:
            return np.arange(self.n_docs)
        _, ids = self.cand_index.search(np.ascontiguousarray(q, dtype=np.float32), k_token)
        return np.unique(tokens_to_docs(self.offsets, ids.ravel()))

    def search(self, q: np.ndarray, k: int, k_token: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Top-``k`` (doc numbers, MaxSim scores) and the number of candidates scored."""
        cand = self.candidates(q, k_token)
        scores = maxsim(q, self.tokens, self.offsets, cand)
        docs, s = top_k(cand, scores, k)
        return docs, s, len(cand)
