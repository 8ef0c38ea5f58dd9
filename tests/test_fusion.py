"""Fusion first stage (ranx.fuse): the command, the pipeline kind, and their refusals.

ranx compiles its numba kernels on first use in a process (tens of seconds), so the tests
that fuse are few; the refusals happen before ranx is called."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from retrieval_kd.artifacts import read_json
from retrieval_kd.data.trec import load_trec_run, sorted_hits
from retrieval_kd.pipeline.load import PipelineError, load_pipeline
from retrieval_kd.pipeline.plan import plan
from retrieval_kd.pipeline.runner import describe_plan
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.retrieve.fusion import METHODS, FusionParams
from retrieval_kd.retrieve.stage import bm25_stage, fusion_stage
from tests.test_cli_errors import one_error
from tests.test_pipeline import line_of, write_corpus
from tests.test_pipeline_runner import rkd, run, setup, statuses


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A tiny BEIR folder and three BM25 run directories: two on test, one on train."""
    d = tmp_path_factory.mktemp("fusion")
    ds = str(write_corpus(d / "tiny"))
    bm25_stage(ds, "test", d / "a", BM25Params(), k=30)
    bm25_stage(ds, "test", d / "b", BM25Params(method="robertson", k1=1.2, b=0.9), k=30)
    bm25_stage(ds, "train", d / "train", BM25Params(), k=30)
    return d


@pytest.mark.parametrize("params", [FusionParams(), FusionParams(method="wsum", norm="zmuv",
                                                                 weights=[0.3, 0.7])])
@pytest.mark.slow
def test_fused_run_is_ranx_fuse_cut_at_k(runs, tmp_path, params):
    from ranx import Run, fuse

    out = fusion_stage([runs / "a", runs / "b"], tmp_path / "f", params, k=7)
    got = load_trec_run(out / "run.trec")
    full = fuse([Run.from_file(str(runs / x / "run.trec"), kind="trec") for x in "ab"],
                norm=params.norm, method=params.method, params=params.ranx_params()).to_dict()
    assert set(got) == set(full) == set(load_trec_run(runs / "a" / "run.trec"))
    assert max(len(h) for h in full.values()) > 7  # the cutoff cuts
    assert got == {q: dict(sorted_hits(h)[:7]) for q, h in full.items()}
    assert got != {q: dict(sorted_hits(h)[:7]) for q, h in load_trec_run(runs / "a" / "run.trec").items()}
    man = read_json(out / "manifest.json")
    assert man["kind"] == "retrieve.fusion" and man["params"]["k"] == 7
    assert man["params"]["method"] == params.method and man["params"]["ranx_params"] == params.ranx_params()
    assert man["inputs"]["dataset"]["split"] == "test" and "ranx" in man["versions"]
    assert [r["run_sha256"] for r in man["inputs"]["runs"]] == [
        read_json(runs / x / "manifest.json")["outputs"]["run.trec"]["sha256"] for x in "ab"]


@pytest.mark.slow
def test_cli_refuses_other_splits_and_malformed_runs_leaving_nothing(runs, tmp_path):
    r = rkd("retrieve", "fuse", str(runs / "a"), str(runs / "train"), "-o", "out", cwd=tmp_path)
    one_error(r, "cannot fuse runs of different datasets or splits")
    assert "tiny/test" in r.stderr and "tiny/train" in r.stderr
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 2.5 x\nq1 Q0 d2 2 1.5\n")
    r = rkd("retrieve", "fuse", str(runs / "a"), str(bad), "-o", "out", cwd=tmp_path)
    one_error(r, f"{bad}:2: expected 6 columns, found 5")
    r = rkd("retrieve", "fuse", str(runs / "a"), str(runs / "b"), "-o", "out", "--method", "wsum",
            cwd=tmp_path)
    one_error(r, "wsum needs weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.trec"]


def test_method_table_matches_ranx():
    from ranx.fusion import fusion_switch

    for method, params in METHODS.items():
        sig = inspect.signature(fusion_switch(method)).parameters
        assert set(sig) - {"runs", "name"} == set(params), method
        assert {n: (None if p.default is inspect.Parameter.empty else p.default)
                for n, p in sig.items() if n in params} == params, method


FUSION = """\
name: tiny
datasets:
  tiny: {source: tiny}
retrieve:
  pool: {kind: fusion, runs: [bm25, bm25-r], dataset: tiny, splits: [test], k: 12}
  bm25: {kind: bm25, dataset: tiny, splits: [train, test], k: 30}
  bm25-r: {kind: bm25, dataset: tiny, splits: [test], k: 30, method: robertson, k1: 1.2}
teachers:
  bm25t:
    dataset: tiny
    splits: [test]
    candidates: pool
    top_k: 10
    teacher: {kind: bm25, k1: 1.5, b: 0.6}
"""


@pytest.mark.slow
def test_pipeline_fusion_references_are_checked_at_load_time(tmp_path):
    p = setup(tmp_path, FUSION.replace("[bm25, bm25-r]", "[bm25, nope]"))
    with pytest.raises(PipelineError) as e:
        load_pipeline(p)
    (line, msg), = e.value.problems
    assert line == line_of(p.read_text(), "pool:") and "no retrieve entry 'nope'" in msg
    assert f"{p}:{line}: retrieve.pool.runs.1" in str(e.value)

    text = FUSION.replace("splits: [test], k: 12", "splits: [train, test], k: 12")
    r = rkd("run", str(setup(tmp_path, text)), "--dry-run", cwd=tmp_path)
    one_error(r, f"{p}:{line_of(text, 'pool:')}: retrieve.pool.runs.1: retrieve entry 'bm25-r' has no "
                 "split 'train'")

    r = rkd("run", str(setup(tmp_path, FUSION)), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("retrieve:pool@test"))
    assert row.split()[1] == "retrieve.fusion" and "retrieve:bm25@test, retrieve:bm25-r@test" in row


@pytest.mark.slow
def test_pipeline_fusion_runs_caches_and_reruns_when_an_input_changes(tmp_path):
    p = setup(tmp_path, FUSION)
    root = tmp_path / "runs"
    stages = {s.id: s for s in plan(load_pipeline(p))}
    assert stages["teacher:bm25t@test"].inputs == {"candidates": "retrieve:pool@test"}
    first = run(p, root)
    assert set(statuses(first).values()) == {"ran"}
    pool = next(s for s in first["stages"] if s["id"] == "retrieve:pool@test")
    fused = load_trec_run(root / pool["dir"] / "run.trec")
    assert fused and all(len(h) == 12 for h in fused.values())
    assert read_json(root / pool["dir"] / "manifest.json")["params"]["method"] == "rrf"

    assert set(statuses(run(p, root)).values()) == {"cached"}

    p.write_text(FUSION.replace("k1: 1.2", "k1: 1.6"))
    rows = {r["id"]: r for r in describe_plan(plan(load_pipeline(p)), root)}
    assert rows["retrieve:pool@test"]["why"].startswith("changed")
    assert [k for k, v in statuses(run(p, root)).items() if v == "ran"] == [
        "retrieve:bm25-r@test", "retrieve:pool@test", "teacher:bm25t@test"]
    p.write_text(FUSION.replace("k: 12}", "k: 12, method: wsum, weights: [0.5, 0.5]}"))
    assert [k for k, v in statuses(run(p, root)).items() if v == "ran"] == [
        "retrieve:pool@test", "teacher:bm25t@test"]
