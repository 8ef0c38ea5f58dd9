"""Dense indexes on synthetic vectors, and the resumable chunk store."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kd.index.chunks import ChunkStore, concat_to_npy, encode_chunked
from retrieval_kd.index.faiss_index import (
    FaissParams,
    auto_nlist,
    build_faiss,
    prepare_search,
    read_index,
    resolve_params,
    sample_rows,
    write_index,
)


def clustered(n: int, d: int, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, n_clusters, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blocks_of(x: np.ndarray, rows: int):
    return lambda: (x[i:i + rows] for i in range(0, len(x), rows))


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


X = clustered(4000, 32)
Q = clustered(50, 32, seed=1)
TRUTH = exact_topk(X, Q, 10)


def test_flat_equals_exact_search(tmp_path):
    index, _ = build_faiss(blocks_of(X, 700), len(X), 32, FaissParams(index="flat"))
    write_index(index, tmp_path / "f.faiss")
    s, i = read_index(tmp_path / "f.faiss").search(Q, 10)
    brute = Q @ X.T
    np.testing.assert_array_equal(i, TRUTH)
    np.testing.assert_allclose(s, np.take_along_axis(brute, TRUTH, 1), rtol=1e-5, atol=1e-6)


def test_hnsw_recall_and_ef_search_override():
    p = FaissParams(index="hnsw", hnsw_m=16, ef_construction=100, ef_search=128)
    index, _ = build_faiss(blocks_of(X, 1000), len(X), 32, p)
    _, i = prepare_search(index, p).search(Q, 10)
    assert recall(i, TRUTH) >= 0.95
    _, low = prepare_search(index, p.model_copy(update={"ef_search": 1})).search(Q, 10)
    assert recall(low, TRUTH) < recall(i, TRUTH)


def test_hnsw_deterministic_build_is_reproducible(tmp_path):
    p = FaissParams(index="hnsw", hnsw_m=8, ef_construction=40)
    for name in ("a", "b"):
        index, _ = build_faiss(blocks_of(X[:1500], 300), 1500, 32, p)
        write_index(index, tmp_path / name)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


@pytest.mark.slow
def test_ivfpq_recall_grows_with_nprobe_and_build_is_reproducible(tmp_path):
    p = FaissParams(index="ivfpq", nlist=32, pq_m=8, pq_nbits=6, nprobe=32)
    index, rp = build_faiss(blocks_of(X, 900), len(X), 32, p)
    assert rp.train_size == len(X) and rp.nlist == 32
    again, _ = build_faiss(blocks_of(X, 900), len(X), 32, p)
    write_index(index, tmp_path / "a")
    write_index(again, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    _, full = prepare_search(index, p).search(Q, 10)
    _, one = prepare_search(index, p.model_copy(update={"nprobe": 1})).search(Q, 10)
    assert recall(full, TRUTH) >= 0.5 and recall(full, TRUTH) > recall(one, TRUTH)


def test_ivfpq_automatic_parameters():
    assert auto_nlist(1_000_000) == 4096 and auto_nlist(100) == 2 and auto_nlist(10) == 1
    rp = resolve_params(FaissParams(index="ivfpq"), 1_000_000, 384)
    assert (rp.nlist, rp.pq_m, rp.train_size) == (4096, 48, 163_840)
    with pytest.raises(ValueError, match="must divide"):
        resolve_params(FaissParams(index="ivfpq", pq_m=7), 1000, 32)


def test_sample_rows_is_deterministic_and_block_independent():
    a = sample_rows(blocks_of(X, 333), len(X), 500, 7)
    b = sample_rows(blocks_of(X, 1000), len(X), 500, 7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, 32)


def test_chunk_store_resumes_and_rejects_other_inputs(tmp_path):
    texts = [f"t{i}" for i in range(10)]
    calls = []

    def enc(batch):
        calls.append(len(batch))
        return {"x": np.array([[int(t[1:])] for t in batch], dtype=np.float32)}

    store = ChunkStore(tmp_path / "w", {"m": 1}, 10, 4)
    assert store.n_chunks == 3
    store.write_chunk(0, enc(texts[0:4]))
    (tmp_path / "w" / ".chunk-000001.tmp-99").mkdir()  # a killed writer's leftover
    store = ChunkStore(tmp_path / "w", {"m": 1}, 10, 4)
    assert not (tmp_path / "w" / ".chunk-000001.tmp-99").exists()
    info = encode_chunked(store, texts, enc)
    assert info == {"chunks": 3, "chunks_resumed": 1, "chunks_encoded": 2} and calls == [4, 4, 2]
    concat_to_npy(store.iter_arrays("x"), tmp_path / "all.npy", 10, 1, np.float32)
    np.testing.assert_array_equal(np.load(tmp_path / "all.npy")[:, 0], np.arange(10))
    other = ChunkStore(tmp_path / "w", {"m": 2}, 10, 4)  # another model: old chunks discarded
    assert other.discarded and other.done_chunks() == []


def test_peak_rss_is_this_programs_own_not_an_exec_parents():
    import subprocess
    import sys

    from retrieval_kd.index.stats import peak_rss_mb

    code = ("import numpy as np, subprocess, sys; a = np.ones(300 * 2**20 // 8); a.sum(); "
            "print(subprocess.run([sys.executable, '-c', 'from retrieval_kd.index.stats import peak_rss_mb; "
            "print(peak_rss_mb())'], capture_output=True, text=True, check=True).stdout)")
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.strip())
    assert 0 < child < 250 and peak_rss_mb() > 0  # the parent's 300 MiB array is not counted
