"""The teacher-score store: resume after kill -9, shards and merge, verify, store identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.data.registry import load_dataset
from retrieval_kd.errors import DataError, IntegrityError, RkdError
from retrieval_kd.scores.imported import import_into_store
from retrieval_kd.scores.merge import merge_shards
from retrieval_kd.scores.schema import make_table
from retrieval_kd.scores.store import ScoreStore
from retrieval_kd.scores.verify import verify_store
from retrieval_kd.teachers.ensemble import EnsembleTeacher, normalize, per_query
from retrieval_kd.teachers.identity import spec_identity
from retrieval_kd.teachers.spec import parse_teacher
from tests import store_worker
from tests.beir import write_beir

REPO = Path(__file__).resolve().parents[1]
WORDS = ["protein", "cell", "gene", "tumor", "virus", "immune", "blood", "drug", "brain", "heart", "lung", "liver", "kidney", "bone", "skin", "muscle", "nerve", "insulin", "glucose", "cancer", "therapy", "vaccine", "antibody", "receptor", "enzyme"]


def make_beir(root: Path, n_docs: int = 12, n_queries: int = 9, seed: int = 0) -> Path:
    """Documents of 12 and queries of 3 random ``WORDS`` (numpy's generator); query i is judged
    relevant to document ``i % n_docs``."""
    rng = np.random.default_rng(seed)
    docs = [{"_id": f"d{i}", "title": f"T{i}", "text": " ".join(rng.choice(WORDS, 12))} for i in range(n_docs)]
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choice(WORDS, 3))} for i in range(n_queries)]
    return write_beir(root, docs, queries, {"test": [(f"q{i}", f"d{i % n_docs}", 1) for i in range(n_queries)]})


def rows(store: ScoreStore) -> dict[tuple[str, str], tuple[float, int | None, int | None]]:
    t = store.table()
    cols = [t.column(c).to_pylist() for c in ("qid", "docid", "score", "rank", "label")]
    return {(q, d): (s, r, lab) for q, d, s, r, lab in zip(*cols)}


def worker(data: Path, root: Path, delay: float, *shard: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.store_worker", str(data), str(root), str(delay),
                             *map(str, shard)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def kill_after(proc: subprocess.Popen, chunks: int) -> None:
    """SIGKILL the worker once it has reported ``chunks`` finished chunks."""
    for _ in range(chunks):
        line = proc.stdout.readline()
        assert line.startswith("scored"), line
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_beir(tmp_path / "tiny")


@pytest.mark.slow
def test_kill9_at_several_points_then_resume_equals_uninterrupted(tiny, tmp_path):
    reference = store_worker.run(str(tiny), str(tmp_path / "ref"), 0.0)
    assert reference.complete and len(rows(reference)) == 9 * 12

    root = tmp_path / "killed"
    for chunks in (1, 3, 6):  # kill -9 after 1, then 3, then 6 more finished chunks
        kill_after(worker(tiny, root, 0.3), chunks)
    store = ScoreStore(root / reference.path.name)
    assert not store.complete
    done_before = {p.name: p.stat().st_mtime_ns for _, _, p in store.parts()}
    assert 1 <= len(done_before) < 9

    proc = worker(tiny, root, 0.0)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    # only the missing chunks were scored by the final session
    assert out.count("scored") == 9 - len(done_before)
    after = {p.name: p.stat().st_mtime_ns for _, _, p in store.parts()}
    assert {k: after[k] for k in done_before} == done_before
    assert store.complete
    assert rows(store) == rows(reference)  # same rows, same scores, nothing lost or doubled
    assert store.manifest["store_id"] == reference.manifest["store_id"]
    assert not list((store.path / "scores").glob(".part-*"))


def test_finished_store_is_not_rescored(tiny, tmp_path):
    first = store_worker.run(str(tiny), str(tmp_path), 0.0)
    proc = worker(tiny, tmp_path, 0.0)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "scored" not in out
    assert rows(ScoreStore(first.path)) == rows(first)


def test_shards_merge_to_the_unsharded_store(tiny, tmp_path):
    whole = store_worker.run(str(tiny), str(tmp_path / "whole"), 0.0)
    shards = [store_worker.run(str(tiny), str(tmp_path / "sh"), 0.0, (i, 3)) for i in range(3)]
    assert sum(len(rows(s)) for s in shards) == len(rows(whole))
    assert not set(rows(shards[0])) & set(rows(shards[1]))
    merged = merge_shards([s.path for s in shards], tmp_path / "merged")
    assert merged.complete and merged.id == whole.id
    assert rows(merged) == rows(whole)
    with pytest.raises(RkdError, match="index"):
        merge_shards([shards[0].path, shards[2].path], tmp_path / "m2")


def test_merge_refuses_shards_of_different_specs(tiny, tmp_path, monkeypatch):
    a = store_worker.run(str(tiny), str(tmp_path), 0.0, (0, 2))
    monkeypatch.setattr(store_worker, "IDENTITY", {**store_worker.IDENTITY, "k1": 1.2})
    b = store_worker.run(str(tiny), str(tmp_path), 0.0, (1, 2))
    with pytest.raises(IntegrityError, match="different requests"):
        merge_shards([a.path, b.path], tmp_path / "merged")


def test_verify_detects_changed_passage_text(tiny, tmp_path):
    store = store_worker.run(str(tiny), str(tmp_path / "s"), 0.0)
    ds = load_dataset(str(tiny), "test")
    assert verify_store(store, ds).ok
    lines = (tiny / "corpus.jsonl").read_text().splitlines()
    doc = json.loads(lines[4])
    doc["text"] += " edited"
    lines[4] = json.dumps(doc)
    (tiny / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    rep = verify_store(store, load_dataset(str(tiny), "test"))
    assert not rep.ok and rep.changed_passages == [doc["_id"]]
    assert any("passages whose text changed" in line for line in rep.lines())


def test_verify_detects_dropped_rows(tiny, tmp_path):
    store = store_worker.run(str(tiny), str(tmp_path / "s"), 0.0)
    store.parts()[0][2].unlink()
    rep = verify_store(store, load_dataset(str(tiny), "test"))
    assert not rep.ok and rep.rows == 9 * 12 - 12


def test_store_id_follows_scoring_inputs_not_runtime_knobs():
    base = {"kind": "llm", "model": "smol", "backend": "openai", "base_url": "http://a"}
    a = spec_identity(parse_teacher(base))
    assert a == spec_identity(parse_teacher({**base, "base_url": "http://b", "batch_size": 2,
                                             "api_key_env": "KEY"}))
    assert a != spec_identity(parse_teacher({**base, "template": "Q: {query} P: {passage} Relevant?"}))
    assert a["template"]  # the default template is recorded, not left implicit
    e1 = {"kind": "ensemble", "normalization": "zscore",
          "members": [{"teacher": {"kind": "bm25"}, "weight": 1.0}]}
    assert spec_identity(parse_teacher(e1)) != spec_identity(parse_teacher({**e1, "normalization": "rank"}))


def test_teacher_spec_errors_name_the_field():
    with pytest.raises(DataError, match="k1"):
        parse_teacher({"kind": "bm25", "k1": "high"})
    with pytest.raises(DataError, match="temperature"):
        parse_teacher({"kind": "bm25", "temperature": 1})


def test_import_refuses_duplicate_pairs(tiny, tmp_path):
    ds = load_dataset(str(tiny), "test")
    t = make_table(["q0", "q0"], ["d1", "d1"], [1.0, 2.0])
    src = tmp_path / "dup.tsv"
    src.write_text("x")
    with pytest.raises(DataError, match="duplicate"):
        import_into_store(t, "trec", src, ds, tmp_path / "st")
    assert not (tmp_path / "st").exists() or not any((tmp_path / "st").iterdir())


@pytest.mark.parametrize("how", ["minmax", "zscore", "rank"])
def test_normalisation_is_per_query(how):
    s = np.array([3.0, 1.0, 2.0, 100.0, 300.0])
    out = per_query(["a", "a", "a", "b", "b"], s, how)
    np.testing.assert_allclose(out[:3], normalize(s[:3], how))
    np.testing.assert_allclose(out[3:], normalize(s[3:], how))
    assert out[0] == out[:3].max() and out[4] == out[3:].max()


def test_normalisation_values():
    s = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(normalize(s, "minmax"), [0, 0.5, 1])
    np.testing.assert_allclose(normalize(s, "zscore"), (s - 2) / np.std(s))
    np.testing.assert_allclose(normalize(s, "rank"), [0, 0.5, 1])
    np.testing.assert_allclose(normalize(np.array([5.0, 5.0]), "zscore"), [0, 0])


def test_ensemble_weights_normalised_members(tiny):
    from retrieval_kd.retrieve.bm25 import BM25Params
    from retrieval_kd.teachers.base import Pair
    from retrieval_kd.teachers.bm25 import BM25Teacher

    ds = load_dataset(str(tiny), "test")
    pairs = [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined())
             for q in ("q0", "q1") for d in ds.corpus.ids()]
    a, b = BM25Teacher(), BM25Teacher(BM25Params(k1=1.5, b=0.9))
    ens = EnsembleTeacher([(a, 2.0), (b, 0.5)], "minmax")
    ens.prepare(ds.corpus)
    got = ens.score(pairs)
    qids = [p.qid for p in pairs]
    want = 2.0 * per_query(qids, a.score(pairs), "minmax") + 0.5 * per_query(qids, b.score(pairs), "minmax")
    np.testing.assert_allclose(got, want)
    assert ens.identity()["members"][0]["weight"] == 2.0


def test_forced_positives_only_for_the_runs_queries(tiny):
    from retrieval_kd.scores.candidates import build_candidates

    ds = load_dataset(str(tiny), "test")
    run = {"q0": {"d3": 2.0, "d4": 1.0}, "q1": {"d5": 1.0}}
    cands = build_candidates(ds, run, top_k=5, add_positives=True)
    assert {c.qid for c in cands} == {"q0", "q1"}
    assert [(c.qid, c.docid, c.rank) for c in cands if c.rank is None] == [("q0", "d0", None), ("q1", "d1", None)]


def test_teacher_load_failure_leaves_no_store(tiny, tmp_path):
    from retrieval_kd.scores.candidates import build_candidates
    from retrieval_kd.scores.store import score_into_store

    def broken():
        raise RkdError("cannot load the test teacher")

    ds = load_dataset(str(tiny), "test")
    cands = build_candidates(ds, {"q0": {"d1": 1.0}}, 5)
    with pytest.raises(RkdError, match="cannot load"):
        score_into_store(ds, cands, broken, {"kind": "broken"}, tmp_path / "scores")
    assert not (tmp_path / "scores").exists() or not any((tmp_path / "scores").iterdir())


def test_unloadable_model_is_named_in_one_error():
    from retrieval_kd.teachers.spec import build_teacher

    spec = parse_teacher({"kind": "cross-encoder", "model": "/nonexistent/ce-folder"})
    with pytest.raises(RkdError, match="cannot load the cross-encoder teacher '/nonexistent/ce-folder'"):
        build_teacher(spec)


def test_ensemble_member_weight_must_be_positive():
    with pytest.raises(DataError, match="weight"):
        parse_teacher({"kind": "ensemble", "members": [{"teacher": {"kind": "bm25"}, "weight": -1}]})
