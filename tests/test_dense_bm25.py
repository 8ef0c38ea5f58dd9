"""First-stage retrieval on a tiny corpus: BM25 (bm25s) and exact dense search."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kd.data.types import Corpus, Document, Queries
from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.retrieve.bm25 import BM25Params, bm25_search
from retrieval_kd.retrieve.dense import DenseParams, dense_search, load_encoder
from retrieval_kd.retrieve.topk import flat_search
from tests.tiny_models import build_tiny_st

CORPUS = Corpus({
    "d1": Document("Tumor cells increase protein levels in mouse models.", "Cancer biology"),
    "d2": Document("Blood pressure drug dose response in a clinical trial.", "Hypertension"),
    "d3": Document("Immune response to virus infection in human patients.", ""),
    "d4": Document("Brain gene expression decreases with age.", "Neuroscience"),
})
QUERIES = Queries({"q1": "tumor protein in mice", "q2": "clinical trial of a blood pressure drug",
                   "q3": "zebra"})


def test_bm25_ranks_matching_document_first():
    run = bm25_search(CORPUS, QUERIES, BM25Params(), k=10)
    assert max(run["q1"], key=run["q1"].get) == "d1"
    assert max(run["q2"], key=run["q2"].get) == "d2"
    assert run["q3"] == {}  # no term matches: empty ranking, not random documents


def test_bm25_params_change_scores():
    a = bm25_search(CORPUS, QUERIES, BM25Params(k1=0.9, b=0.4), k=10)
    b = bm25_search(CORPUS, QUERIES, BM25Params(k1=2.0, b=1.0), k=10)
    assert a["q1"]["d1"] != pytest.approx(b["q1"]["d1"])


def test_bm25_stemming_matches_inflections():
    stem = bm25_search(CORPUS, Queries({"q": "decreasing"}), BM25Params(), k=10)
    raw = bm25_search(CORPUS, Queries({"q": "decreasing"}), BM25Params(stemmer=None), k=10)
    assert "d4" in stem["q"] and "d4" not in raw["q"]


def test_bm25_rejects_bad_params():
    with pytest.raises(ValueError):
        BM25Params(k1=-1)
    with pytest.raises(ValueError):
        BM25Params(unknown=1)


def test_flat_search_is_exact():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((50, 8)).astype("float32")
    qs = rng.standard_normal((3, 8)).astype("float32")
    scores, idx = flat_search(docs, qs, 5)
    brute = qs @ docs.T
    for i in range(3):
        assert list(idx[i]) == list(np.argsort(-brute[i])[:5])
        np.testing.assert_allclose(scores[i], np.sort(brute[i])[::-1][:5], rtol=1e-5)


def test_dense_search_with_tiny_model(tmp_path):
    folder = build_tiny_st(tmp_path / "st")
    ref = resolve_model(str(folder))
    assert ref.sha256 and len(ref.sha256) == 64
    st = load_encoder(ref, DenseParams())
    run = dense_search(st, CORPUS, QUERIES, DenseParams(batch_size=2), k=3)
    assert set(run) == {"q1", "q2", "q3"}
    assert all(len(h) == 3 for h in run.values())
    # Normalised embeddings: scores are cosines.
    assert all(-1.0001 <= s <= 1.0001 for h in run.values() for s in h.values())
