"""SPLADE inverted index: postings build and sparse dot-product search against brute force."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from retrieval_kd.index.sparse import InvertedIndex, build_postings, flops

N, V = 500, 300


def random_docs(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    # Zipf-ish term popularity, as in real vocabularies
    p = 1.0 / np.arange(1, V + 1)
    rows = []
    for _ in range(N):
        terms = np.unique(rng.choice(V, size=rng.integers(1, 40), p=p / p.sum()))
        w = np.round(rng.gamma(2.0, 0.5, len(terms)), 2) + 0.01
        rows.append(sp.csr_matrix((w, (np.zeros(len(terms), int), terms)), shape=(1, V)))
    return sp.vstack(rows).tocsr().astype(np.float32)


D = random_docs()


def test_postings_from_chunks_equal_scipy_csc(tmp_path):
    chunks = [D[i:i + 77] for i in range(0, N, 77)]
    build_postings(lambda: ((c.indptr, c.indices, c.data) for c in chunks), N, V, tmp_path)
    csc = D.tocsc()
    csc.sort_indices()
    np.testing.assert_array_equal(np.load(tmp_path / "indptr.npy"), csc.indptr)
    np.testing.assert_array_equal(np.load(tmp_path / "indices.npy"), csc.indices)
    np.testing.assert_array_equal(np.load(tmp_path / "data.npy"), csc.data)


def test_search_equals_brute_force_sparse_dot(tmp_path):
    inv = InvertedIndex.from_csr(D, tmp_path)
    rng = np.random.default_rng(1)
    dense = D.astype(np.float64).toarray()
    for _ in range(30):
        terms = np.unique(rng.choice(V, size=rng.integers(1, 12)))
        w = rng.uniform(0.1, 2.0, len(terms))
        docs, scores, touched = inv.search(terms, w, 10)
        brute = dense[:, terms] @ w
        assert touched == int((dense[:, terms] > 0).sum())
        hit = np.flatnonzero(brute > 0)
        order = np.lexsort((hit, -brute[hit]))[:10]
        np.testing.assert_array_equal(docs, hit[order])
        np.testing.assert_allclose(scores, brute[hit[order]], rtol=1e-12)


def test_query_with_no_indexed_term_returns_nothing(tmp_path):
    m = D.tolil()
    m[:, 7] = 0
    inv = InvertedIndex.from_csr(m.tocsr(), tmp_path)
    docs, _, touched = inv.search(np.array([7]), np.array([1.0]), 10)
    assert len(docs) == 0 and touched == 0


def test_flops_is_expected_overlap_per_pair():
    inv_df = np.diff(D.tocsc().indptr)
    qterms = [np.array([0, 1]), np.array([1, 5, 9])]
    expected = sum(
        ((D[:, q].toarray() > 0).sum() / N) for q in qterms) / len(qterms)  # mean over q of sum_t p_d(t)
    assert abs(flops(inv_df, N, qterms, V) - expected) < 1e-12
