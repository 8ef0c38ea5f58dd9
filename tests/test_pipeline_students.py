"""Train, index, search and rerank stages in a pipeline, with tiny random-weight students:
the adapters drive the real train_stage, build_index and search_stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval_kd.artifacts import read_json
from retrieval_kd.pipeline.load import PipelineError, load_pipeline
from retrieval_kd.pipeline.runner import run_stages
from retrieval_kd.report import collect, verify, write_report
from tests.test_pipeline import write_corpus
from tests.tiny_models import WORDS, build_tiny_bert, build_tiny_st

TRAIN = "{max_steps: 2, batch_size: 4, max_length: 32, rank_window: [2, 15], warmup: 0.0, logging_steps: 1"

PIPE = f"""\
name: students
datasets:
  tiny: {{source: tiny}}
retrieve:
  bm25: {{kind: bm25, dataset: tiny, splits: [train, test], k: 30}}
teachers:
  t: {{dataset: tiny, splits: [train], candidates: bm25, top_k: 15, add_positives: true,
       teacher: {{kind: bm25, k1: 1.2}}}}
students:
  bi: {{family: bi-encoder, init: models/st, dataset: tiny, teacher: t, loss: margin-mse,
        params: {TRAIN}, negatives: 2}}}}
  bi-labels: {{family: bi-encoder, init: models/st, dataset: tiny, candidates: bm25,
               params: {TRAIN}, negatives: 2, candidates_top_k: 15}}}}
  sp: {{family: splade, init: models/mlm, dataset: tiny, teacher: t, loss: kl, params: {TRAIN}, kl_passages: 4}}}}
  cb: {{family: colbert, init: models/bert, dataset: tiny, teacher: t, loss: kl,
        params: {TRAIN}, kl_passages: 4, colbert_dim: 16}}}}
  ce: {{family: cross-encoder, init: models/bert, dataset: tiny, teacher: t, loss: margin-mse,
        params: {TRAIN}, negatives: 2}}}}
rerankers:
  ce: {{dataset: tiny, splits: [test], candidates: bm25, top_k: 10,
        teacher: {{kind: cross-encoder, model: "student:ce", max_length: 64}}}}
indexes:
  bi: {{student: bi, dataset: tiny, search: {{splits: [test], k: 20}}}}
  bi-labels: {{student: bi-labels, dataset: tiny, search: {{splits: [test], k: 20}}}}
  sp: {{student: sp, dataset: tiny, search: {{splits: [test], k: 20}}}}
  cb: {{student: cb, dataset: tiny, kind: flat, search: {{splits: [test], k: 20}}}}
evals:
  test:
    dataset: tiny
    split: test
    baseline: BM25
    systems: {{BM25: "retrieve:bm25", bi: "index:bi", label-only: "index:bi-labels", splade: "index:sp",
               colbert: "index:cb", cross-encoder: "reranker:ce"}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("students")
    write_corpus(d / "tiny", n_docs=50, n_queries=40, words=WORDS)
    build_tiny_st(d / "models" / "st")
    build_tiny_bert(d / "models" / "mlm", masked_lm=True)
    build_tiny_bert(d / "models" / "bert")
    (d / "p.yaml").write_text(PIPE)
    return d


def statuses(rec: dict) -> dict[str, str]:
    return {s["id"]: s["status"] for s in rec["stages"]}


@pytest.mark.slow
def test_students_train_index_search_and_evaluate(env):
    root = env / "runs"
    rec = run_stages(load_pipeline(env / "p.yaml"), root, echo=lambda _m: None)
    assert set(statuses(rec).values()) == {"ran"}, statuses(rec)
    by_id = {s["id"]: s for s in rec["stages"]}
    for name in ("bi", "bi-labels", "sp", "cb", "ce"):
        res = by_id[f"student:{name}"]["result"]
        d = root / by_id[f"student:{name}"]["dir"]
        assert (d / res["model"] / "manifest.json").is_file() and res["steps"] == 2
    man = read_json(root / by_id["student:bi-labels"]["dir"] / "model" / "manifest.json")
    assert man["params"]["teacher"] == "none" and man["inputs"]["candidates"]["run_file"].endswith("run.trec")
    man = read_json(root / by_id["student:bi"]["dir"] / "model" / "manifest.json")
    assert man["inputs"]["score_stores"][0]["path"].startswith(str((root / "stages").resolve()))
    assert by_id["search:sp@test"]["result"]["latency_ms_per_query"] > 0
    assert by_id["index:cb"]["result"]["family"] == "colbert"
    ce = by_id["reranker:ce@test"]
    assert ce["inputs"] == {"candidates": "retrieve:bm25@test", "model:ce": "student:ce"}

    paths = write_report(root)
    assert "loss" in paths and paths["loss"].read_bytes()[:4] == b"\x89PNG"
    rep = collect(root)
    assert {c.stage_id for c in rep.losses} == {f"student:{n}" for n in ("bi", "bi-labels", "sp", "cb", "ce")}
    assert verify(rep) == 6 * 3

    # a student's parameter: it, its index and search, and the eval rerun; nothing else
    (env / "p.yaml").write_text(PIPE.replace("kl_passages: 4}}\n  cb:", "kl_passages: 3}}\n  cb:"))
    rec = run_stages(load_pipeline(env / "p.yaml"), root, echo=lambda _m: None)
    assert sorted(k for k, v in statuses(rec).items() if v == "ran") == [
        "eval:test", "index:sp", "search:sp@test", "student:sp"]


def test_train_settings_are_checked_against_the_train_config(env):
    text = PIPE.replace("kl_passages: 4}}\n  cb:", "kl_pasages: 4}}\n  cb:")
    p = env / "bad.yaml"
    p.write_text(text)
    with pytest.raises(PipelineError) as e:
        load_pipeline(p)
    (line, msg), = e.value.problems
    assert line == next(i for i, t in enumerate(text.splitlines(), 1) if "kl_pasages" in t)
    assert "students.sp.params.kl_pasages: unknown train setting" in msg and "kl_passages" in msg
    text = PIPE.replace("loss: margin-mse,\n        params: {max_steps: 2, batch_size: 4, max_length: 32, "
                        "rank_window: [2, 15], warmup: 0.0, logging_steps: 1, negatives: 2}}\n  bi-labels",
                        "loss: margin-mse,\n        params: {max_steps: 2, batch_size: 4, max_length: 32, "
                        "rank_window: [20, 15], warmup: 0.0, logging_steps: 1, negatives: 2}}\n  bi-labels")
    p.write_text(text)
    with pytest.raises(PipelineError, match="students.bi: rank_window"):
        load_pipeline(p)
    text = PIPE.replace("teacher: t, loss: kl, params", "teacher: t, loss: klx, params")
    assert text != PIPE
    p.write_text(text)
    with pytest.raises(PipelineError) as e:
        load_pipeline(p)
    (line, msg), = e.value.problems
    assert line == next(i for i, t in enumerate(text.splitlines(), 1) if "loss: klx" in t)
    assert "students.sp.loss: loss 'klx'" in msg and str(p) in str(e.value)
    p.write_text(PIPE.replace("  cb: {student: cb, dataset: tiny, kind: flat,",
                              "  cex: {student: ce, dataset: tiny, search: {splits: [test]}}\n"
                              "  cb: {student: cb, dataset: tiny, kind: flat,"))
    with pytest.raises(PipelineError, match="cross-encoder is not indexable"):
        load_pipeline(p)


def test_index_settings_are_checked_against_the_index_module(env):
    p = env / "bad-index.yaml"
    text = PIPE.replace("  sp: {student: sp, dataset: tiny, search: {splits: [test], k: 20}}",
                        "  sp: {student: sp, dataset: tiny, params: {nprobe: 4},\n"
                        "       search: {splits: [test], k: 20, params: {ef_serch: 5}}}")
    p.write_text(text)
    with pytest.raises(PipelineError) as e:
        load_pipeline(p)
    msgs = {ln: m for ln, m in e.value.problems}
    assert "unknown for a splade index" in msgs[next(i for i, t in enumerate(text.splitlines(), 1) if "nprobe" in t)]
    assert "ef_serch: unknown search setting" in msgs[next(i for i, t in enumerate(text.splitlines(), 1)
                                                         if "ef_serch" in t)]
