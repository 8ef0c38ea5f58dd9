"""The persistent embedding cache: a corpus is encoded once per (model, backend, length) and
shared by index builds, teachers and pipeline stages, without changing any result or identity."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.artifacts import read_json, read_manifest
from retrieval_kd.embcache import EmbeddingCache, doc_identity, open_cache
from retrieval_kd.teachers.base import Pair
from tests.beir import random_beir
from tests.test_index_tiny import tiny_splade, tiny_st

N_DOCS = 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("embcache")
    return {"ds": random_beir(root / "ds", n_docs=N_DOCS, n_queries=4), "st": tiny_st(root / "st"),
            "splade": tiny_splade(root / "splade")}


def _count(monkeypatch, module, name: str) -> list[int]:
    """Patch ``module.name`` (an encode function taking texts second or first) to count texts."""
    seen: list[int] = []
    real = getattr(module, name)

    def counting(*a, **k):
        texts = a[1] if not isinstance(a[0], list) else a[0]
        seen.append(len(texts))
        return real(*a, **k)
    monkeypatch.setattr(module, name, counting)
    return seen


def _chunks(index: Path, name: str) -> np.ndarray:
    return np.concatenate([np.load(p / f"{name}.npy") for p in sorted((index / "embeddings").glob("chunk-*"))])


def _build(family, tiny, out, cache=None, **kw):
    from retrieval_kd.index.build import build_index

    return build_index(family, str(tiny["ds"]), out, str(tiny[family if family == "splade" else "st"]),
                       chunk_size=12, keep_embeddings=True, embedding_cache=cache, **kw)


def test_second_dense_build_encodes_nothing_and_equals_an_uncached_build(tiny, tmp_path, monkeypatch):
    import retrieval_kd.index.encoders as enc_mod
    from retrieval_kd.index.faiss_index import FaissParams

    seen = _count(monkeypatch, enc_mod, "encode_texts")
    plain = _build("dense", tiny, tmp_path / "plain")
    assert sum(seen) == N_DOCS
    seen.clear()
    cache = tmp_path / "cache"
    first = _build("dense", tiny, tmp_path / "flat", cache)
    assert sum(seen) == N_DOCS and read_manifest(first)["stats"]["encode"]["cached_docs"] == 0
    seen.clear()
    second = _build("dense", tiny, tmp_path / "hnsw", cache, faiss_params=FaissParams(index="hnsw"))
    assert sum(seen) == 0  # no document reached the model
    man = read_manifest(second)
    assert man["stats"]["encode"]["cached_docs"] == N_DOCS and man["stats"]["docs_per_s"] is None
    for other in (first, second):  # same vectors, same identity and corpus fingerprint
        np.testing.assert_allclose(_chunks(other, "emb"), _chunks(plain, "emb"), atol=1e-6)
        assert read_manifest(other)["inputs"] == read_manifest(plain)["inputs"]
        assert read_json(other / "embeddings" / "state.json")["fingerprint"] == \
            read_json(plain / "embeddings" / "state.json")["fingerprint"]
    # nothing written outside the named folder (the index folders aside)
    assert sorted(os.listdir(tmp_path)) == ["cache", "flat", "hnsw", "plain"]
    (folder,) = cache.iterdir()
    assert len(folder.name) == 64 and (folder / "identity.json").is_file()
    # another max length is another encoder: its own folder, everything encoded
    seen.clear()
    from retrieval_kd.retrieve.dense import DenseParams

    short = _build("dense", tiny, tmp_path / "short", cache, encoder_params=DenseParams(max_seq_length=8))
    assert sum(seen) == N_DOCS and read_manifest(short)["stats"]["encode"]["cached_docs"] == 0
    assert len(list(cache.iterdir())) == 2


@pytest.mark.slow
def test_splade_builds_and_teacher_share_the_cache(tiny, tmp_path, monkeypatch):
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.teachers.encoders import SpladeTeacher

    cache = tmp_path / "cache"
    plain = _build("splade", tiny, tmp_path / "plain")
    first = _build("splade", tiny, tmp_path / "a", cache)
    second = _build("splade", tiny, tmp_path / "b", cache)
    assert read_manifest(second)["stats"]["encode"]["cached_docs"] == N_DOCS
    for name in ("indptr", "indices", "data"):
        for other in (first, second):
            np.testing.assert_allclose(_chunks(other, name), _chunks(plain, name), atol=1e-6)
    for f in sorted(p.name for p in plain.glob("*.npy")):  # the postings themselves
        np.testing.assert_allclose(np.load(second / f), np.load(plain / f), atol=1e-6)
    # a teacher of the same model finds every passage there: it encodes queries only
    ds = load_dataset(str(tiny["ds"]), "test")
    pairs = [Pair("q0", i, ds.queries.texts["q0"], d.joined()) for i, d in ds.corpus.docs.items()]
    fresh = SpladeTeacher(str(tiny["splade"])).score(pairs)
    teacher = SpladeTeacher(str(tiny["splade"]), embedding_cache=cache)
    seen = _count(monkeypatch, teacher.se, "encode_document")
    np.testing.assert_allclose(teacher.score(pairs), fresh, atol=1e-5)
    assert seen == [] and teacher._disk.cached == N_DOCS
    teacher.close()


def test_bi_encoder_teacher_fills_the_cache_an_index_build_reads(tiny, tmp_path, monkeypatch):
    import retrieval_kd.index.encoders as enc_mod
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.teachers.encoders import BiEncoderTeacher

    ds = load_dataset(str(tiny["ds"]), "test")
    pairs = [Pair("q0", i, ds.queries.texts["q0"], d.joined()) for i, d in ds.corpus.docs.items()]
    cache = tmp_path / "cache"
    teacher = BiEncoderTeacher(str(tiny["st"]), embedding_cache=cache)
    ident = teacher.identity()
    scores = teacher.score(pairs)
    teacher.close()  # writes its pending vectors
    assert teacher.identity() == ident == BiEncoderTeacher(str(tiny["st"])).identity()
    np.testing.assert_allclose(scores, BiEncoderTeacher(str(tiny["st"])).score(pairs), atol=1e-6)
    seen = _count(monkeypatch, enc_mod, "encode_texts")
    built = _build("dense", tiny, tmp_path / "ix", cache)
    assert sum(seen) == 0 and read_manifest(built)["stats"]["encode"]["cached_docs"] == N_DOCS
    np.testing.assert_allclose(_chunks(built, "emb"), _chunks(_build("dense", tiny, tmp_path / "plain"), "emb"),
                               atol=1e-6)


def test_bi_encoder_teacher_keeps_query_vectors_apart_and_reuses_them(tiny, tmp_path, monkeypatch):
    """Query vectors (``embed_queries``, what ``embed_on: queries`` asks once per seed) are cached
    in a folder of their own, and a second teacher of the same model encodes none of them."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.teachers.encoders import BiEncoderTeacher

    texts = list(load_dataset(str(tiny["ds"]), "test").queries.texts.values())
    cache = tmp_path / "cache"
    first = BiEncoderTeacher(str(tiny["st"]), embedding_cache=cache, query_prompt="q: ")
    want = first.embed_queries(texts)
    first.close()
    folders = [d for d in cache.iterdir() if d.is_dir()]
    assert len(folders) == 1 and '"texts": "queries"' in (folders[0] / "identity.json").read_text()
    again = BiEncoderTeacher(str(tiny["st"]), embedding_cache=cache, query_prompt="q: ")
    seen = _count(monkeypatch, again.st, "encode")
    np.testing.assert_allclose(again.embed_queries(texts), want, atol=1e-6)
    assert seen == [] and again._disk_q.cached == len(set(texts))
    other = BiEncoderTeacher(str(tiny["st"]), embedding_cache=cache, query_prompt="other: ")
    seen = _count(monkeypatch, other.st, "encode")
    other.embed_queries(texts[:2])
    assert sum(seen) == 2  # another prompt: other vectors, encoded afresh


# -- the cache on its own, with a stand-in encoder ------------------------------------------------
IDENT = {"vectors": "dense", "model": {"sha256": "x" * 64}, "max_length": 8}


def fake_dense(texts: list[str]) -> np.ndarray:
    return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8).astype(np.float32)
                     for t in texts]) if texts else np.zeros((0, 8), np.float32)


def fake_sparse(texts: list[str]):
    import scipy.sparse as sp

    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:4], np.uint8) for t in texts]
    return sp.csr_matrix((np.concatenate(rows).astype(np.float32) + 1,
                          (np.repeat(np.arange(len(texts)), 4), np.concatenate(rows).astype(np.int64))),
                         shape=(len(texts), 256))


def counted(fn, seen: list[str]):
    return lambda texts: seen.extend(texts) or fn(texts)


def test_hits_misses_and_sparse_round_trip(tmp_path):
    texts = [f"doc {i}" for i in range(20)]
    seen: list[str] = []
    c = EmbeddingCache(tmp_path, IDENT, "dense")
    np.testing.assert_array_equal(c.encode(texts[:12] + texts[:2], counted(fake_dense, seen)),
                                  fake_dense(texts[:12] + texts[:2]))
    assert len(seen) == 12 == c.encoded and c.cached == 0  # a repeated text is encoded once
    c.flush()
    seen.clear()
    d = EmbeddingCache(tmp_path, IDENT, "dense")
    np.testing.assert_array_equal(d.encode(texts, counted(fake_dense, seen)), fake_dense(texts))
    assert seen == texts[12:] and d.cached == 12 and d.encoded == 8
    # the prompt is part of the text the model sees
    seen.clear()
    d.encode(texts[:3], counted(fake_dense, seen), prompt="doc: ")
    assert seen == texts[:3]
    sp_ident = {**IDENT, "vectors": "splade"}
    s = EmbeddingCache(tmp_path, sp_ident, "sparse", flush_rows=5)  # several shards, flushed as it goes
    s.encode(texts, fake_sparse)
    s.close()
    got = EmbeddingCache(tmp_path, sp_ident, "sparse").encode(texts[::-1], lambda t: pytest.fail("encoded"))
    assert abs(got - fake_sparse(texts[::-1])).max() == 0 and got.shape == (20, 256)
    assert open_cache(None, IDENT, "dense") is None and open_cache(tmp_path, None, "dense") is None

    class Ref:  # a hub id not on disk: no content identity, so no cache
        sha256 = None
    assert doc_identity("dense", Ref(), 8, {}) is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_shard_is_ignored_and_encoded_again(tmp_path, capsys, damage):
    texts = [f"doc {i}" for i in range(10)]
    c = EmbeddingCache(tmp_path, IDENT, "dense")
    c.encode(texts, fake_dense)
    c.close()
    (shard,) = c.folder.glob("shard-*")
    emb = shard / "emb.npy"
    raw = bytearray(emb.read_bytes())
    if damage == "truncate":
        emb.write_bytes(raw[:-7])
    else:  # same size, other values: only the sha256 tells
        raw[-5] ^= 0xFF
        emb.write_bytes(raw)
    seen: list[str] = []
    d = EmbeddingCache(tmp_path, IDENT, "dense")
    np.testing.assert_array_equal(d.encode(texts, counted(fake_dense, seen)), fake_dense(texts))  # never a wrong vector
    assert seen == texts and d.cached == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("ignored, its texts are encoded again") == 1 and "emb.npy" in err
    d.flush()  # the writer removes the damaged shard
    assert not shard.exists() and len(list(c.folder.glob("shard-*"))) == 1
    seen.clear()
    EmbeddingCache(tmp_path, IDENT, "dense").encode(texts, counted(fake_dense, seen))
    assert seen == []


WRITER = """
import sys
from tests.test_embcache import IDENT, fake_dense
from retrieval_kd.embcache import EmbeddingCache
lo, hi = int(sys.argv[2]), int(sys.argv[3])
c = EmbeddingCache(sys.argv[1], IDENT, "dense", flush_rows=7)
for i in range(lo, hi, 7):
    c.encode([f"doc {j}" for j in range(i, min(i + 7, hi))], fake_dense)
c.close()
"""


def test_two_writing_processes_leave_each_text_once(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), lo, hi], cwd=repo, env=env)
             for lo, hi in (("0", "140"), ("70", "210"))]  # 70 texts in common
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    folder = EmbeddingCache(tmp_path, IDENT, "dense").folder
    keys = np.concatenate([np.load(s / "keys.npy") for s in folder.glob("shard-*")])
    assert len(keys) == len(set(keys.tolist())) == 210  # each text once
    assert not list(folder.glob(".shard-*"))  # no temporary folder left
    texts = [f"doc {j}" for j in range(210)]
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, IDENT, "dense").encode(
        texts, lambda t: pytest.fail("encoded")), fake_dense(texts))


PIPE = """\
name: emb
datasets:
  tiny: {source: tiny}
retrieve:
  bm25: {kind: bm25, dataset: tiny, splits: [test], k: 10}
  dense: {kind: dense, model: models/st, dataset: tiny, splits: [test], k: 10}
teachers:
  bi: {dataset: tiny, splits: [test], candidates: bm25, top_k: 5, teacher: {kind: bi-encoder, model: models/st}}
indexes:
  st: {model: models/st, family: bi-encoder, dataset: tiny, kind: hnsw, search: {splits: [test], k: 10}}
"""


@pytest.mark.slow
def test_a_pipeline_encodes_its_corpus_once(tmp_path):
    from tests.tiny_pipeline import make_env, run_quietly

    root = run_quietly(make_env(tmp_path, PIPE, n_docs=50, n_queries=8))
    by_id = {s["id"]: s for s in read_json(root / "run.json")["stages"]}
    cached = sorted(by_id[i]["result"]["cached_docs"] for i in ("retrieve:dense@test", "index:st"))
    assert cached == [0, 50]  # whichever ran second took every document from the first
    # the teacher, the run and the index: one folder of document vectors (the teacher's query
    # vectors have their own)
    (folder,) = [d for d in (root / "embeddings").iterdir()
                 if '"texts": "queries"' not in (d / "identity.json").read_text()]
    assert sum(len(np.load(s / "keys.npy")) for s in folder.glob("shard-*")) == 50


def test_a_file_as_the_cache_root_is_one_clear_error(tmp_path):
    from retrieval_kd.embcache import open_cache
    from retrieval_kd.errors import RkdError

    f = tmp_path / "not-a-folder"
    f.write_text("x")
    with pytest.raises(RkdError, match="must be a folder"):
        open_cache(f, {"vectors": "dense"}, "dense")
    assert open_cache(None, {"vectors": "dense"}, "dense") is None
