"""SPLADE: an inverted index over sparse document vectors, queried by sparse dot product.

The index is the document-term matrix in CSC form (one posting list per vocabulary term:
ascending document numbers and weights), stored as three ``.npy`` arrays so it can be
memory-mapped. It is built out of core from the encoded chunks in two passes (document
frequencies, then postings), so only the postings arrays, memory-mapped, ever hold the
whole collection.

A query's score for a document is ``sum_t q_t * d_t`` over the query's terms: the query
terms' posting lists are gathered and accumulated per document.

Cost is reported the way the SPLADE papers do: FLOPS, the expected number of
multiplications for one query-document pair, ``sum_t p_q(t) * p_d(t)`` where ``p(t)`` is
the fraction of queries / documents in which term ``t`` is active; and the measured
average number of postings touched per query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from retrieval_kd.retrieve.topk import top_k

POSTING_FILES = ("indptr.npy", "indices.npy", "data.npy")


def sparse_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_cols: int):
    import scipy.sparse as sp

    return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_cols))


def torch_sparse_to_csr(t, n_cols: int | None = None):
    """A (n, V) torch tensor, sparse COO or dense, as a scipy CSR matrix (sorted, no zeros)."""
    import scipy.sparse as sp

    if t.is_sparse:
        t = t.coalesce()
        idx = t.indices().cpu().numpy()
        vals = t.values().detach().float().cpu().numpy()
        shape = tuple(t.shape)
        m = sp.csr_matrix((vals, (idx[0], idx[1])), shape=shape, dtype=np.float32)
    else:
        m = sp.csr_matrix(t.detach().float().cpu().numpy())
    m.eliminate_zeros()
    m.sort_indices()
    return m


def build_postings(chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]] | Callable,
                   n_docs: int, vocab: int, out: Path) -> dict[str, int]:
    """Write the CSC postings of row chunks (CSR ``indptr, indices, data``) under ``out``.

    ``chunks`` is a callable returning a fresh iterator (it is read twice).
    """
    # pass 1: document frequency of every term
    df = np.zeros(vocab, dtype=np.int64)
    nnz = 0
    for _, indices, _ in chunks():
        df += np.bincount(indices, minlength=vocab)
        nnz += len(indices)
    indptr = np.zeros(vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    np.save(out / "indptr.npy", indptr)
    doc_dtype = np.int32 if n_docs < 2**31 else np.int64
    post_doc = np.lib.format.open_memmap(out / "indices.npy", mode="w+", dtype=doc_dtype, shape=(nnz,))
    post_val = np.lib.format.open_memmap(out / "data.npy", mode="w+", dtype=np.float32, shape=(nnz,))
    # pass 2: append each chunk's entries to their terms' lists (documents stay ascending)
    fill = indptr[:-1].copy()
    first_doc = 0
    for rptr, indices, data in chunks():
        rows = np.repeat(np.arange(len(rptr) - 1, dtype=np.int64) + first_doc, np.diff(rptr))
        order = np.argsort(indices, kind="stable")
        terms = np.asarray(indices)[order]
        counts = np.bincount(terms, minlength=vocab)
        term_start = np.cumsum(counts) - counts
        dest = fill[terms] + (np.arange(len(terms)) - term_start[terms])
        post_doc[dest] = rows[order]
        post_val[dest] = np.asarray(data)[order]
        fill += counts
        first_doc += len(rptr) - 1
    if first_doc != n_docs or not np.array_equal(fill, indptr[1:]):
        raise ValueError("postings build: chunk rows do not add up to the corpus")
    post_doc.flush()
    post_val.flush()
    del post_doc, post_val
    return {"nnz": int(nnz), "terms_used": int((df > 0).sum()), "vocab": int(vocab)}


class InvertedIndex:
    """Posting lists (CSC arrays), memory-mapped by default."""

    def __init__(self, folder: str | Path, n_docs: int, mmap: bool = True) -> None:
        from retrieval_kd.index.files import expect_count, read_npy

        folder = Path(folder)
        self.indptr = read_npy(folder / "indptr.npy", mmap)
        self.indices = read_npy(folder / "indices.npy", mmap)
        self.data = read_npy(folder / "data.npy", mmap)
        self.n_docs, self.vocab = n_docs, len(self.indptr) - 1
        nnz = int(self.indptr[-1]) if len(self.indptr) else -1
        expect_count(folder / "indices.npy", len(self.indices), nnz, "postings")
        expect_count(folder / "data.npy", len(self.data), nnz, "weights")

    @classmethod
    def from_csr(cls, m, out: Path) -> InvertedIndex:
        """Build from an in-memory CSR document-term matrix (tests, small corpora)."""
        m = m.tocsr()
        m.sort_indices()
        out.mkdir(parents=True, exist_ok=True)
        build_postings(lambda: iter([(m.indptr, m.indices, m.data)]), m.shape[0], m.shape[1], out)
        return cls(out, m.shape[0], mmap=False)

    def df(self) -> np.ndarray:
        return np.diff(self.indptr)

    def scores(self, q_terms: np.ndarray, q_weights: np.ndarray) -> tuple[np.ndarray, int]:
        """Dense score vector over all documents (float64) and the postings touched."""
        docs, vals = [], []
        for t, w in zip(q_terms.tolist(), q_weights.tolist()):
            lo, hi = int(self.indptr[t]), int(self.indptr[t + 1])
            if hi > lo:
                docs.append(self.indices[lo:hi])
                vals.append(self.data[lo:hi].astype(np.float64) * w)
        if not docs:
            return np.zeros(self.n_docs), 0
        d = np.concatenate(docs)
        return np.bincount(d, weights=np.concatenate(vals), minlength=self.n_docs), len(d)

    def search(self, q_terms: np.ndarray, q_weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Top-``k`` documents with a positive score: (doc numbers, scores, postings touched).

        Ties are broken by document number, so the ranking is deterministic.
        """
        s, touched = self.scores(q_terms, q_weights)
        hit = np.flatnonzero(s > 0)
        top, scores = top_k(hit, s[hit], k)
        return top, scores, touched


def flops(doc_df: np.ndarray, n_docs: int, query_terms: list[np.ndarray], vocab: int) -> float:
    """SPLADE FLOPS: ``sum_t p_q(t) p_d(t)``, the expected multiplications per query-doc pair."""
    if not query_terms or n_docs == 0:
        return 0.0
    qdf = np.bincount(np.concatenate(query_terms), minlength=vocab) if query_terms else np.zeros(vocab)
    return float(np.dot(qdf / len(query_terms), doc_df / n_docs))
