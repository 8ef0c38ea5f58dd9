"""ColBERT late interaction: exact MaxSim, candidate generation, token encoders."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kd.index.faiss_index import FaissParams, build_faiss
from retrieval_kd.index.late import LateIndex, maxsim, token_rows, tokens_to_docs
from retrieval_kd.retrieve.topk import top_k
from tests.test_index_tiny import tiny_bert, tiny_multi_vector, tiny_st

DIM = 16


def random_docs(n: int = 200, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = rng.standard_normal((0 if i == 5 else int(rng.integers(1, 30)), DIM)).astype(np.float32)
        out.append((m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)).astype(np.float16))
    return out


DOCS = random_docs()
TOKENS = np.concatenate(DOCS)
OFFSETS = np.concatenate([[0], np.cumsum([len(d) for d in DOCS])]).astype(np.int64)


def brute_maxsim(q: np.ndarray, doc: np.ndarray) -> float:
    if len(doc) == 0:
        return 0.0
    return float(sum(max(float(qi @ dj) for dj in doc.astype(np.float32)) for qi in q))


def query(seed: int, n: int = 8) -> np.ndarray:
    q = np.random.default_rng(100 + seed).standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_token_rows_gathers_each_documents_range():
    docs = np.array([3, 0, 7, 5])
    rows, lens = token_rows(OFFSETS, docs)
    assert list(lens) == [len(DOCS[d]) for d in docs]
    np.testing.assert_array_equal(rows, np.concatenate([np.arange(OFFSETS[d], OFFSETS[d + 1]) for d in docs]))


@pytest.mark.parametrize("block", [1 << 18, 40])  # one block, and many small ones
def test_maxsim_equals_brute_force_on_candidates(block):
    cand = np.array([11, 5, 0, 199, 42, 42, 7])  # includes an empty document and a repeat
    for s in range(5):
        q = query(s)
        got = maxsim(q, TOKENS, OFFSETS, cand, block_tokens=block)
        want = [brute_maxsim(q, DOCS[d]) for d in cand]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_maxsim_matches_sentence_transformers_maxsim():
    import torch
    from sentence_transformers.util.similarity import maxsim as st_maxsim

    cand = np.array([1, 2, 3, 50])
    q = query(0)
    ref = st_maxsim(torch.from_numpy(q), [torch.from_numpy(DOCS[d].astype(np.float32)) for d in cand])
    np.testing.assert_allclose(maxsim(q, TOKENS, OFFSETS, cand), ref.numpy().ravel(), rtol=1e-5)


def test_index_search_reranks_candidates_exactly_and_flat_with_all_tokens_is_exhaustive():
    index, _ = build_faiss(lambda: [TOKENS.astype(np.float32)], len(TOKENS), DIM, FaissParams(index="flat"))
    late = LateIndex.__new__(LateIndex)
    late.tokens, late.offsets, late.n_docs, late.cand_index = TOKENS, OFFSETS, len(DOCS), index
    for s in range(5):
        q = query(s)
        docs, scores, ncand = late.search(q, 10, k_token=4)
        _, ids = index.search(q, 4)
        cand = np.unique(tokens_to_docs(OFFSETS, ids.ravel()))
        assert ncand == len(cand) and set(docs) <= set(cand)
        brute = np.array([brute_maxsim(q, DOCS[d]) for d in cand])
        want_docs, want_scores = top_k(cand, brute.astype(np.float32), 10)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        assert list(docs) == list(want_docs)
        # every token as a neighbour: all documents with tokens are candidates -> exhaustive
        docs_all, _, n_all = late.search(q, 10, k_token=len(TOKENS))
        every = np.array([brute_maxsim(q, d) for d in DOCS], dtype=np.float32)
        assert n_all == len(DOCS) - 1  # doc 5 has no tokens
        assert list(docs_all) == list(top_k(np.arange(len(DOCS)), every, 10)[0])


def test_token_encoder_loads_a_multi_vector_encoder_folder(tmp_path):
    from retrieval_kd.index.encoders import ColbertParams, TokenEncoder

    enc = TokenEncoder(str(tiny_multi_vector(tmp_path / "mve")), ColbertParams(document_length=12))
    assert enc.source == "multi-vector-encoder" and enc.dim == 16
    out = enc.encode_docs(["tumor cells grow in the brain of the mouse " * 3, "blood"])
    assert out["tokens"].dtype == np.float16 and out["lens"][0] == 12 and out["lens"][1] >= 1
    np.testing.assert_allclose(np.linalg.norm(out["tokens"].astype(np.float32), axis=1), 1, atol=2e-3)
    assert enc.identity()["document_length"] == 12


@pytest.mark.parametrize("normalize", [True, False])
def test_token_encoder_returns_the_librarys_own_vectors(tmp_path, normalize):
    """The NumPy masking path gives what MultiVectorEncoder.encode_* return, text by text."""
    from retrieval_kd.index.encoders import ColbertParams, TokenEncoder

    enc = TokenEncoder(str(tiny_multi_vector(tmp_path / "mve")),
                       ColbertParams(document_length=12, query_length=8, normalize=normalize))
    texts = ["tumor cells grow in the brain of the mouse " * 3, "blood", "cells of the mouse brain"]
    for query, fn in ((False, enc.model.encode_document), (True, enc.model.encode_query)):
        ours = enc._encode(texts, query=query)
        lib = fn(texts, convert_to_numpy=True, normalize_embeddings=normalize, show_progress_bar=False)
        assert [a.shape for a in ours] == [np.asarray(b).shape for b in lib]
        for a, b in zip(ours, lib):
            np.testing.assert_allclose(a, np.asarray(b), atol=1e-6)

def test_token_encoder_wraps_plain_folders_deterministically(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    from retrieval_kd.index.encoders import TokenEncoder

    hf = tiny_bert(tmp_path / "hf")
    a, b = TokenEncoder(str(hf)), TokenEncoder(str(hf))
    assert a.source == "transformer-tokens" and a.dim == 32
    qa, qb = a.encode_queries(["tumor cells"])[0], b.encode_queries(["tumor cells"])[0]
    np.testing.assert_array_equal(qa, qb)  # no random projection added
    st_dir = tiny_st(tmp_path / "st")
    assert TokenEncoder(str(st_dir)).dim == 32
    # an ST pipeline with a Dense layer: the layer becomes the per-token projection
    body = Transformer(str(hf))
    SentenceTransformer(modules=[body, Pooling(32, "mean"), Dense(32, 8)]).save(str(tmp_path / "st-dense"))
    enc = TokenEncoder(str(tmp_path / "st-dense"))
    assert enc.dim == 8 and "Dense" in enc.identity()["modules"]
