"""Sharded dense search (retrieval_kd/index/shards.py) and Ray-encoded index chunks
(retrieval_kd/index/ray_encode.py) give what one index / one process gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval_kd.index.shards import MISSING, ShardedSearcher, exact_topk, merge_topk
from tests.beir import write_beir
from tests.test_pipeline import write_corpus
from tests.test_score_ray import needs_ray


def flat_topk(x: np.ndarray, q: np.ndarray, k: int):
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index.search(q, k)


def test_merged_shards_equal_one_flat_index():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    s_ref, i_ref = flat_topk(x, q, 10)
    parts = []
    for lo, hi in [(0, 300), (300, 301), (301, 1000)]:  # uneven shards, one of a single row
        s, i = flat_topk(x[lo:hi], q, 10)
        parts.append((s, np.where(i >= 0, i + lo, MISSING)))  # a 1-row shard pads with -1
    s, i = merge_topk(parts, 10)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    s2, i2 = exact_topk((x[j:j + 128] for j in range(0, 1000, 128)), q, 10)  # blocks, as memory-mapped chunks
    np.testing.assert_array_equal(i2, i_ref)
    np.testing.assert_allclose(s2, s_ref, rtol=1e-5)


def test_fewer_results_than_k_are_padded():
    s, i = merge_topk([(np.array([[3.0, 1.0]]), np.array([[5, MISSING]])), (np.array([[2.0]]), np.array([[9]]))], 4)
    assert i.tolist() == [[5, 9, MISSING, MISSING]] and s[0, :2].tolist() == [3.0, 2.0]
    with pytest.raises(ValueError, match="no shards"):
        merge_topk([], 3)


def halves(tmp_path):
    """The tiny corpus, and its two halves as datasets of their own (the same queries and qrels)."""
    full = write_corpus(tmp_path / "full", n_docs=40, n_queries=10)
    docs = [json.loads(line) for line in (full / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (full / "queries.jsonl").read_text().splitlines()]
    qrels = [(q, d, 1) for q, d, _ in (ln.split("\t") for ln in (full / "qrels/test.tsv").read_text().splitlines()[1:])]
    parts = [write_beir(tmp_path / f"half{j}", docs[j * 20:(j + 1) * 20], queries, {"test": qrels}) for j in (0, 1)]
    return full, parts


@pytest.mark.slow
def test_two_indexes_built_separately_search_as_one(tmp_path):
    from retrieval_kd.index.build import build_index
    from retrieval_kd.index.faiss_index import FaissParams
    from retrieval_kd.index.search import Searcher, encoder_for
    from tests.test_index_tiny import tiny_st

    full, parts = halves(tmp_path)
    model = str(tiny_st(tmp_path / "st"))
    fp = FaissParams(index="flat")
    build_index("dense", str(full), tmp_path / "one", model, faiss_params=fp)
    for j, part in enumerate(parts):
        build_index("dense", str(part), tmp_path / f"shard{j}", model, faiss_params=fp)
    one = Searcher(tmp_path / "one")
    sharded = ShardedSearcher([tmp_path / "shard0", tmp_path / "shard1"])
    assert sharded.doc_ids == one.doc_ids
    enc = encoder_for(one.manifest)
    for rep in enc.encode_queries(["tumor cell protein", "blood brain", "gene"]):
        docs, scores, _ = one.search(rep, 7)
        expect = [(one.doc_ids[int(d)], float(s)) for d, s in zip(docs, scores)]
        got = sharded.search_ids(rep, 7)
        assert [d for d, _ in got] == [d for d, _ in expect]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expect], rtol=1e-5)


@needs_ray
@pytest.mark.slow
def test_ray_encoded_chunks_build_the_one_process_index(tmp_path):
    from retrieval_kd.index.build import build_index
    from retrieval_kd.index.faiss_index import FaissParams, read_index
    from tests.test_index_tiny import tiny_st

    full = write_corpus(tmp_path / "full", n_docs=40, n_queries=10)
    model = str(tiny_st(tmp_path / "st"))
    fp = FaissParams(index="flat")
    build_index("dense", str(full), tmp_path / "one", model, faiss_params=fp, chunk_size=8)
    build_index("dense", str(full), tmp_path / "ray", model, faiss_params=fp, chunk_size=8,
                ray={"address": "local", "workers": 2})
    a, b = (read_index(tmp_path / d / "index.faiss") for d in ("ray", "one"))
    np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), rtol=1e-5, atol=1e-6)
    man = json.loads((tmp_path / "ray/manifest.json").read_text())
    enc = man["stats"]["encode"]
    assert enc["chunks_encoded"] == 5 and enc["ray"]["workers"] == 2
    assert len(enc["ray"]["worker_peak_rss_mb"]) == 2
    one = json.loads((tmp_path / "one/manifest.json").read_text())
    assert man["inputs"] == one["inputs"] and man["params"]["faiss"] == one["params"]["faiss"]
