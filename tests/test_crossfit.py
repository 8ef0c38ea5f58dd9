"""Cross-fitting: the fold assignment, ``query_folds`` in training, the ``crossfit`` teacher spec
and teacher, and a pipeline student with ``crossfit: 2`` as a teacher member scoring its own
training split out-of-fold (and test with the full model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.artifacts import read_json, sha256_json
from retrieval_kd.data.types import Corpus, Dataset, Document, Queries
from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.scores.candidates import shard_of
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.train.config import TrainConfig
from retrieval_kd.train.examples import Cand, outside_fold

# ---------------------------------------------------------------- folds and training


def test_fold_assignment_is_stable_and_a_partition():
    # crc32 of the id, mod k: the same in every process and Python version (pinned here)
    assert [shard_of(f"q{i}", 2) for i in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [shard_of(f"q{i}", 3) for i in range(8)] == [1, 1, 0, 2, 1, 1, 2, 0]
    groups = {f"q{i}": [Cand("d0", None, 1)] for i in range(200)}
    for k in (2, 3, 5):
        kept = [set(outside_fold(groups, (j, k))) for j in range(k)]
        held = [set(groups) - s for s in kept]
        assert all(held) and set().union(*held) == set(groups)  # every query in a fold, none empty
        assert sum(len(h) for h in held) == len(groups)  # ... and in one fold only
        for j, h in enumerate(held):
            assert h == {q for q in groups if shard_of(q, k) == j}


def _hand_inputs(n: int = 30):
    from retrieval_kd.train.stage import TrainInputs

    docs = {f"d{i}": Document(f"passage {i}") for i in range(12)}
    queries = {f"q{i}": f"query number {i}" for i in range(n)}
    qrels = {q: {f"d{i % 12}": 1} for i, q in enumerate(queries)}
    groups = {q: [Cand(f"d{r}", None, r + 1) for r in range(12)] for q in queries}
    return TrainInputs(Dataset("hand", "train", Corpus(docs), Queries(queries), qrels), groups)


def _label_only(**kw) -> TrainConfig:
    return TrainConfig(family="bi-encoder", init="x", teacher="none", losses="infonce", candidates="run.trec",
                       negatives=2, rank_window=(1, 12), **kw)


def test_query_folds_drops_exactly_the_folds_queries():
    from retrieval_kd.train.stage import make_examples

    inputs = _hand_inputs()
    text_of = inputs.ds.queries.texts
    data, stats = make_examples(_label_only(), inputs)
    assert set(data["query"]) == set(text_of.values())
    for j in range(3):
        data, stats = make_examples(_label_only(query_folds=(j, 3)), inputs)
        want = {text_of[q] for q in text_of if shard_of(q, 3) != j}
        assert set(data["query"]) == want and stats.queries == len(want) < len(text_of)
        assert any(f"fold {j}" in n for n in stats.notes)


def test_query_folds_config_range_and_run_key():
    from retrieval_kd.train.examples import ExampleStats
    from retrieval_kd.train.stage import LATER_FIELDS, RUNTIME_KEYS, run_key

    for bad in ((2, 2), (-1, 2), (0, 1)):
        with pytest.raises(ValueError, match="query_folds"):
            _label_only(query_folds=bad)
    cfg, stats = _label_only(), ExampleStats(fingerprint="f")
    # unset, the field stays out of the key: runs recorded before it keep theirs
    old = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RUNTIME_KEYS and k not in LATER_FIELDS}
    assert run_key(cfg, stats, "sha") == sha256_json({"params": old, "examples": "f", "init": "sha"})[:16]
    keys = {run_key(_label_only(query_folds=f), stats, "sha") for f in ((0, 2), (1, 2), (0, 3))}
    assert len(keys) == 3 and run_key(cfg, stats, "sha") not in keys


def test_train_cli_query_folds_flag(tmp_path):
    import subprocess

    from retrieval_kd.cli.train_cmd import parse_folds

    assert parse_folds("1/4") == (1, 4) and parse_folds(None) is None
    with pytest.raises(RkdError, match="J/K"):
        parse_folds("1:4")
    r = subprocess.run([sys.executable, "-m", "retrieval_kd.cli.main", "train", "-f", "bi-encoder", "-m", "x",
                        "--label-only", "--candidates", "run.trec", "--query-folds", "2/2", "-o", "out"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "query_folds [2, 2]" in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------- the crossfit teacher


class _Const(Teacher):
    def __init__(self, value: float):
        self.value, self.seen = value, []

    def identity(self):
        return {"kind": "const", "value": self.value}

    def score(self, pairs):
        self.seen += [p.qid for p in pairs]
        return np.full(len(pairs), self.value)


def test_crossfit_teacher_routes_each_query_to_its_fold_model():
    from retrieval_kd.teachers.crossfit import CrossFitTeacher

    folds = [_Const(10.0), _Const(20.0), _Const(30.0)]
    t = CrossFitTeacher(folds)
    pairs = [Pair(f"q{i}", f"d{j}", "q", "p") for i in range(12) for j in range(3)]
    got = t.score(pairs)
    assert got.tolist() == [10.0 * (shard_of(p.qid, 3) + 1) for p in pairs]
    for j, f in enumerate(folds):
        assert f.seen and {shard_of(q, 3) for q in f.seen} == {j}
    assert t.identity() == {"kind": "crossfit", "k": 3, "fold_of": "crc32(qid) % k",
                            "folds": [f.identity() for f in folds]}
    with pytest.raises(ValueError, match="two fold models"):
        CrossFitTeacher([folds[0]])


def test_crossfit_spec_parses_and_its_identity_names_every_fold(tmp_path):
    from retrieval_kd.teachers.identity import spec_identity
    from retrieval_kd.teachers.spec import parse_teacher

    spec = parse_teacher({"kind": "crossfit", "folds": [{"kind": "bm25", "k1": 1.0}, {"kind": "bm25", "k1": 2.0}]})
    ident = spec_identity(spec)
    assert ident["kind"] == "crossfit" and ident["k"] == 2
    assert [f["k1"] for f in ident["folds"]] == [1.0, 2.0]
    with pytest.raises(DataError, match="folds"):
        parse_teacher({"kind": "crossfit", "folds": [{"kind": "bm25"}]})


# ---------------------------------------------------------------- a cross-fitted pipeline student

TRAIN = ("{max_steps: 2, batch_size: 4, max_length: 32, rank_window: [2, 15], warmup: 0.0, logging_steps: 1, "
         "lr: 0.05, negatives: 2, candidates_top_k: 15}")
PIPE = f"""\
name: xfit
datasets:
  tiny: {{source: tiny}}
retrieve:
  bm25: {{kind: bm25, dataset: tiny, splits: [train, test], k: 30}}
teachers:
  ens:
    dataset: tiny
    splits: [train, test]
    candidates: bm25
    top_k: 10
    teacher:
      kind: ensemble
      normalization: zscore
      members: [{{teacher: {{kind: bm25}}}}, {{teacher: {{kind: bi-encoder, model: "student:labels"}}}}]
students:
  labels:
    family: bi-encoder
    init: models/st
    dataset: tiny
    candidates: bm25
    crossfit: 2
    params: {TRAIN}
"""
MEMBER = {"kind": "bi-encoder", "model": "student:labels"}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Path:
    from tests.tiny_pipeline import make_env

    return make_env(tmp_path_factory.mktemp("crossfit"), PIPE)


@pytest.fixture(scope="module")
def run_root(env) -> Path:
    from tests.tiny_pipeline import run_quietly

    return run_quietly(env)


def _plan(env: Path, text: str = PIPE, check_sources: bool = True):
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.plan import plan

    (env / "q.yaml").write_text(text)
    return {s.id: s for s in plan(load_pipeline(env / "q.yaml", check_sources=check_sources))}


def test_plan_has_the_fold_models_and_the_train_store_depends_on_them(env):
    from retrieval_kd.pipeline.plan import dataset_fingerprint, key_payload, select

    by = _plan(env)
    assert sorted(i for i in by if i.startswith("student:")) == [
        "student:labels", "student:labels%f0", "student:labels%f1"]
    assert "query_folds" not in by["student:labels"].config["params"]
    for j in range(2):
        assert by[f"student:labels%f{j}"].config["params"]["query_folds"] == [j, 2]
        assert by[f"student:labels%f{j}"].dirname.startswith(f"student-labels-f{j}-")
    train, test = by["teacher:ens@train"], by["teacher:ens@test"]
    assert train.inputs == {"candidates": "retrieve:bm25@train",  # not the full model: it scores no train query
                            "model:labels%f0": "student:labels%f0", "model:labels%f1": "student:labels%f1"}
    assert train.config["crossfit"] == {"labels": 2}
    assert test.inputs == {"candidates": "retrieve:bm25@test", "model:labels": "student:labels"}
    assert "crossfit" not in test.config
    keys = {s.id: s.key for s in by.values()}
    payload = key_payload(train, keys, dataset_fingerprint)
    assert payload["inputs"]["model:labels%f1"] == keys["student:labels%f1"]
    assert sha256_json(payload)[:16] == train.key
    # the full model and the test stage are what they would be without crossfit; 3 folds move the train store
    plain = _plan(env, PIPE.replace("    crossfit: 2\n", ""))
    assert "student:labels%f0" not in plain and plain["student:labels"].key == keys["student:labels"]
    assert plain["teacher:ens@test"].key == test.key and plain["teacher:ens@train"].key != train.key
    three = _plan(env, PIPE.replace("crossfit: 2", "crossfit: 3"))
    assert three["teacher:ens@train"].key not in (train.key, plain["teacher:ens@train"].key)
    assert three["student:labels%f2"].config["params"]["query_folds"] == [2, 3]
    stages = list(by.values())
    assert sorted(s.id for s in select(stages, ["student:labels"]) if s.kind == "train") == [
        "student:labels", "student:labels%f0", "student:labels%f1"]
    assert [s.id for s in select(stages, ["student:labels%f1"]) if s.kind == "train"] == ["student:labels%f1"]


def _ensemble(model: Path):
    from retrieval_kd.teachers.spec import build_teacher, parse_teacher

    return build_teacher(parse_teacher({"kind": "ensemble", "normalization": "zscore", "members": [
        {"teacher": {"kind": "bm25"}}, {"teacher": {**MEMBER, "model": str(model)}}]}))


def _stored(run_root: Path, st: dict, sid: str):
    from retrieval_kd.scores.store import ScoreStore

    store = ScoreStore(run_root / st[sid]["dir"] / st[sid]["result"]["store"])
    t = store.table()
    return store, t.column("qid").to_pylist(), t.column("docid").to_pylist(), np.array(t.column("score").to_pylist())


@pytest.mark.slow
def test_train_store_is_scored_out_of_fold_and_test_by_the_full_model(env, run_root):
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.models.resolve import resolve_model

    rec = read_json(run_root / "run.json")
    st = {s["id"]: s for s in rec["stages"]}
    assert {s["status"] for s in rec["stages"]} == {"ran"}
    models = {n: run_root / st[f"student:labels{n}"]["dir"] / "model" for n in ("", "%f0", "%f1")}
    for j in range(2):
        man = read_json(models[f"%f{j}"] / "manifest.json")
        assert man["params"]["query_folds"] == [j, 2]
        assert any(f"fold {j}" in n for n in man["examples"]["notes"])
    for split in ("train", "test"):
        ds = load_dataset(str(env / "tiny"), split)
        store, qids, docids, scores = _stored(run_root, st, f"teacher:ens@{split}")
        pairs = [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined()) for q, d in zip(qids, docids)]
        want = {}
        for n, m in models.items():
            teacher = _ensemble(m)
            teacher.prepare(ds.corpus)
            want[n] = teacher.score(pairs)
            teacher.close()
        member = store.manifest["teacher"]["members"][1]["teacher"]
        if split == "train":
            folds = np.array([shard_of(q, 2) for q in qids])
            assert set(folds.tolist()) == {0, 1}
            expect = np.where(folds == 0, want["%f0"], want["%f1"])
            assert scores == pytest.approx(expect, rel=1e-5, abs=1e-5)
            assert np.abs(scores - want[""]).max() > 1e-3  # the full model would have scored otherwise
            assert member["kind"] == "crossfit" and member["k"] == 2
            shas = [f["model"]["sha256"] for f in member["folds"]]
            assert shas == [resolve_model(str(models[f"%f{j}"])).sha256 for j in range(2)]
            assert resolve_model(str(models[""])).sha256 not in shas and len(set(shas)) == 2
        else:
            assert scores == pytest.approx(want[""], rel=1e-5, abs=1e-5)
            assert np.abs(scores - want["%f0"]).max() > 1e-3
            assert member["kind"] == "bi-encoder"
            assert member["model"]["sha256"] == resolve_model(str(models[""])).sha256


@pytest.mark.slow
def test_a_second_run_is_fully_cached(env, run_root):
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages

    again = run_stages(load_pipeline(env / "p.yaml"), run_root, echo=lambda _m: None)
    assert {s["status"] for s in again["stages"]} == {"cached"}
    assert len(again["stages"]) == 2 + 3 + 2  # bm25 x2, full + 2 folds, ens x2


def test_crossfit_load_errors_name_file_and_line(env):
    from retrieval_kd.pipeline.load import PipelineError, load_pipeline

    def problem(text: str, needle: str = "") -> tuple[int | None, str]:
        assert text != PIPE
        p = env / "bad.yaml"
        p.write_text(text)
        with pytest.raises(PipelineError) as e:
            load_pipeline(p)
        assert str(p) in str(e.value)
        (one,) = [pr for pr in e.value.problems if needle in pr[1]]
        return one

    def line_of(text: str, needle: str) -> int:
        return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)

    text = PIPE.replace("crossfit: 2\n", "crossfit: 2\n    seeds: [1, 2]\n")
    line, msg = problem(text, "crossfit")  # (and: a teacher cannot use a seeded student)
    assert line == line_of(text, "crossfit: 2") and "students.labels.crossfit" in msg and "'seeds'" in msg
    text = PIPE.replace("crossfit: 2", "crossfit: 1")
    line, msg = problem(text)
    assert line == line_of(text, "crossfit: 1") and "students.labels.crossfit" in msg and "2" in msg
    text = PIPE.replace("candidates_top_k: 15}", "candidates_top_k: 15, query_folds: [0, 2]}")
    line, msg = problem(text)
    assert line == line_of(text, "query_folds") and "params.query_folds" in msg and "crossfit" in msg
    text = PIPE.replace('{kind: bi-encoder, model: "student:labels"}',
                        '{kind: crossfit, folds: [{kind: bm25}, {kind: bi-encoder, model: "student:labels"}]}')
    line, msg = problem(text)
    assert line == line_of(text, "kind: crossfit") and "members.1.teacher.folds.1.model" in msg
    assert "crossfit: K" in msg


def test_pipelines_without_crossfit_keep_their_stage_keys(tmp_path):
    from tests.test_pipeline import write_corpus
    from tests.test_pipeline_seeds import UNSEEDED, UNSEEDED_KEYS

    write_corpus(tmp_path / "tiny")
    by = _plan(tmp_path, UNSEEDED, check_sources=False)
    assert {i: s.key for i, s in by.items()} == UNSEEDED_KEYS
