"""``rkd report``: renders a run's record; its numbers are evaluate_run's on the same run files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from retrieval_kd.artifacts import read_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.trec import load_trec_run
from retrieval_kd.errors import IntegrityError, NotFoundError
from retrieval_kd.eval.metrics import evaluate_run
from retrieval_kd.pipeline.load import load_pipeline
from retrieval_kd.pipeline.runner import run_stages
from retrieval_kd.report import collect, verify, write_report
from retrieval_kd.report.collect import LossCurve, read_loss_log
from retrieval_kd.report.plots import loss_curves
from tests.test_pipeline_runner import rkd, setup


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("report")
    p = setup(d, n_docs=120, n_queries=80)
    run_stages(load_pipeline(p), d / "runs", echo=lambda _m: None)
    return d / "runs"


@pytest.mark.slow
def test_report_numbers_equal_evaluate_run_on_the_run_files(run_root):
    paths = write_report(run_root)
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    rec = read_json(run_root / "run.json")
    ds = load_dataset(str(run_root.parent / "tiny"), "test")
    eval_stage = next(s for s in rec["stages"] if s["kind"] == "eval")
    inputs = read_json(run_root / eval_stage["dir"] / "stage.json")["inputs"]
    metrics = ["ndcg@10", "mrr@10", "recall@100"]
    for system, inp in inputs.items():
        run = load_trec_run(run_root / "stages" / inp["dir"] / "run.trec")
        expect = evaluate_run(ds.qrels, run, metrics)
        rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("| ")]
        cells = next(r for r in rows if r[0] in (system, f"{system} (baseline)"))
        shown = [float(re.match(r"[\d.]+", c).group()) for c in cells[2:5]]
        assert shown == [round(expect[m], 4) for m in metrics], system
        for v in shown:
            assert f"{v:.4f}" in html
    assert "BM25 (baseline)" in md and "p-values against BM25" in md
    assert "## Stages" in md and "teacher:bm25t@test" in md and "pairs/s" in md
    assert verify(collect(run_root)) == 9


@pytest.mark.slow
def test_report_figures_and_cli(run_root):
    r = rkd("report", str(run_root), "--check", cwd=run_root.parent)
    assert r.returncode == 0, r.stderr
    assert "| rerank |" in r.stdout
    png = run_root / "report" / "quality_latency-test.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quality_latency-test.png" in (run_root / "report" / "report.html").read_text()


@pytest.mark.slow
def test_significance_is_ranx_paired_t_test_against_the_baseline(run_root):
    from scipy.stats import ttest_rel

    rep = collect(run_root)
    table = rep.evals[0]
    assert table.baseline == "BM25"
    ds = load_dataset(str(run_root.parent / "tiny"), "test")
    per_query = {}
    for row in table.rows:
        per_query[row.name] = evaluate_run(ds.qrels, load_trec_run(row.run_file), ["ndcg@10"], per_query=True)
    base = per_query["BM25"]["ndcg@10"]
    for row in table.rows:
        if row.baseline:
            assert row.significance == {}
            continue
        mine = per_query[row.name]["ndcg@10"]
        qs = sorted(base)
        a, b = [mine[q] for q in qs], [base[q] for q in qs]
        sig = row.significance["ndcg@10"]
        if a == b:
            assert sig["p_value"] is None and not sig["significant"]
        else:
            assert sig["p_value"] == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-6)
            assert sig["significant"] == (sig["p_value"] < 0.05)


@pytest.mark.slow
def test_verify_catches_a_tampered_result(run_root, tmp_path):
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(run_root, copy)
    rec = read_json(copy / "run.json")
    ev = next(s for s in rec["stages"] if s["kind"] == "eval")
    res = copy / ev["dir"] / "results.json"
    data = json.loads(res.read_text())
    data["results"][0]["metrics"]["ndcg@10"] += 0.01
    res.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match="ndcg@10"):
        verify(collect(copy))


def test_loss_logs_become_a_figure(tmp_path):
    log = tmp_path / "loss.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / (s + 1), "epoch": s / 10})
                             for s in range(0, 50, 10)) + "\n")
    steps, losses = read_loss_log(log)
    assert steps == [0, 10, 20, 30, 40] and losses[0] == 2.0
    hf = tmp_path / "trainer_state.json"
    hf.write_text(json.dumps({"log_history": [{"loss": 1.0, "step": 5}, {"eval_loss": 3.0, "step": 5},
                                              {"loss": 0.5, "step": 10}]}))
    assert read_loss_log(hf) == ([5.0, 10.0], [1.0, 0.5])
    out = loss_curves([LossCurve("student:a", steps, losses), LossCurve("student:b", [1, 2], [1, 0.5])],
                      tmp_path / "loss.png")
    assert out and out.read_bytes()[:4] == b"\x89PNG"


def test_report_of_a_folder_without_a_record(tmp_path):
    with pytest.raises(NotFoundError, match="run.json"):
        write_report(tmp_path)


def test_report_of_a_partial_run(tmp_path):
    p = setup(tmp_path)
    run_stages(load_pipeline(p), tmp_path / "runs", only=["retrieve:"], echo=lambda _m: None)
    paths = write_report(tmp_path / "runs")
    md = paths["markdown"].read_text()
    assert "## Evaluation" not in md and "| eval:test | eval | not selected | – |" in md
    assert "| retrieve:bm25@test | retrieve.bm25 | ran |" in md
