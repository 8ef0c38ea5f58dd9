"""``rkd bench SUITE``: a system over every locally available dataset of a suite, end to end on
tiny fixtures (BM25, a tiny random-weight bi-encoder): the table, the stage cache, the datasets
listed as missing with their sources, the references beside ours and XOR's R@kt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval_kd.bench.run import markdown, run_suite
from retrieval_kd.bench.suites import get_suite
from retrieval_kd.bench.system import BenchSystem
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.trec import load_trec_run
from retrieval_kd.eval.metrics import evaluate_run
from retrieval_kd.settings import DATA_HOME_ENV

FIX = Path(__file__).parent / "fixtures"
CQA = ["android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats", "tex", "unix",
       "webmasters", "wordpress"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A data home with the tiny BEIR folder as scifact and as every CQADupStack sub-forum, the
    MS MARCO, XOR-TyDi and MIRACL fixtures; offline."""
    h = tmp_path / "home"
    shutil.copytree(FIX / "beir-tiny", h / "scifact")
    for s in CQA:
        shutil.copytree(FIX / "beir-tiny", h / "cqadupstack" / s)
    shutil.copytree(FIX / "msmarco" / "msmarco-passage", h / "msmarco-passage")
    shutil.copytree(FIX / "xortydi-tiny", h / "xor-tydi")
    shutil.copytree(FIX / "miracl", h / "miracl")
    monkeypatch.setenv(DATA_HOME_ENV, str(h))
    monkeypatch.setenv("RKD_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return h


def _row(result: dict, name: str) -> dict:
    return next(r for r in result["rows"] if r["dataset"] == name)


@pytest.mark.slow
def test_bench_beir_with_bm25_runs_the_local_sets_lists_the_rest_and_caches(home, tmp_path):
    out = tmp_path / "runs" / "bench" / "beir"
    res = run_suite(get_suite("beir"), BenchSystem(), out, echo=lambda s: None)
    sf = _row(res, "scifact")
    assert sf["status"] == "ran" and sf["ignore_identical_ids"] is True
    run = load_trec_run(sf["units"][0]["run"]["file"])
    qrels = load_dataset("scifact", "test").qrels
    ours = evaluate_run(qrels, run, ["ndcg@10"], ignore_identical_ids=True)["ndcg@10"]
    assert sf["metrics"]["ndcg@10"] == pytest.approx(ours)
    assert ours > evaluate_run(qrels, run, ["ndcg@10"], ignore_identical_ids=False)["ndcg@10"]  # doc q2 dropped
    assert [(r["label"], r["value"]) for r in sf["references"]] == [("BM25 flat", 0.6789), ("BM25 multifield", 0.6647)]
    assert sf["references"][0]["delta"] == pytest.approx(round(ours - 0.6789, 4))
    cqa = _row(res, "cqadupstack")  # 12 sub-forums, one number: their mean
    assert cqa["status"] == "ran" and len(cqa["averaged_over"]) == 12
    assert cqa["metrics"]["ndcg@10"] == pytest.approx(ours)  # the same tiny folder twelve times
    assert cqa["references"][0]["label"] == "BM25 flat (mean of 12)"
    avg = res["average"]["ndcg@10"]
    assert (avg["n"], avg["of"], avg["datasets"]) == (2, 14, ["cqadupstack", "scifact"])
    missing = [r for r in res["rows"] if r["status"] != "ran"]
    assert len(missing) == 12 and {r["dataset"] for r in missing} >= {"nq", "trec-covid", "fever"}
    nq = _row(res, "nq")
    assert nq["local"] == str(home / "nq") and nq["missing"] == {"": ["the folder itself"]}
    assert nq["sources"] == ["https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/nq.zip "
                             "(md5 d4d3d2e48787a744b6f6e691ff534307)", "ir_datasets beir/nq"]
    md = markdown(res)
    assert "| scifact | test | ndcg@10 |" in md and "0.6789 BM25 flat [pyserini-2cr-bm25-flat]" in md
    assert "| **average** (2 of 14) |" in md and "Not available locally, not run (12)" in md
    assert "| nq | test | " + str(home / "nq") in md and "`pyserini-2cr-bm25-flat`: Pyserini" in md
    assert res["run_record"]["totals"]["ran"] == 13  # scifact + 12 sub-forums
    again = run_suite(get_suite("beir"), BenchSystem(), out, echo=lambda s: None)
    assert again["run_record"]["totals"]["cached"] == 13 and again["run_record"]["totals"]["ran"] == 0
    assert _row(again, "scifact")["metrics"] == sf["metrics"]


@pytest.mark.slow
def test_bench_cli_end_to_end_with_a_tiny_random_bi_encoder_on_msmarco(home, tmp_path):
    from retrieval_kd.cli.main import app
    from tests.tiny_models import build_tiny_st

    model = build_tiny_st(tmp_path / "tiny-st")
    r = CliRunner().invoke(app, ["bench", "msmarco", "--model", str(model), "--k", "10", "-o", "bench-out",
                                 "--table", "tables/msm"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "tables" / "msm.json").read_text())
    assert [(x["dataset"], x["split"], x["status"]) for x in res["rows"]] == [
        ("msmarco-passage", "dev-small", "ran"), ("msmarco-passage", "trec-dl-2019", "ran"),
        ("msmarco-passage", "trec-dl-2020", "ran")]
    dev, dl19 = res["rows"][0], res["rows"][1]
    assert list(dev["metrics"]) == ["mrr@10", "recall@1000"] and list(dl19["metrics"]) == ["ndcg@10", "recall@1000"]
    assert dl19["units"][0]["dataset"]["relevance_level"] == 2  # TREC DL: recall at grade >= 2
    assert dev["references"] == []  # an unregistered model has no published numbers
    assert res["system"]["family"] == "bi-encoder" and res["system"]["model_provenance"]["model"]["sha256"]
    assert res["versions"] and "| **average** (1 of 1) | | mrr@10 |" in (tmp_path / "tables" / "msm.md").read_text()
    assert (tmp_path / "bench-out" / "run.json").is_file() and (tmp_path / "bench-out" / "pipeline.yaml").is_file()
    assert not list((tmp_path / "bench-out").glob(".bench-*.yaml"))  # the generated file is not left behind


@pytest.mark.slow
def test_bench_xling_scores_xor_retrieve_by_answer_recall_in_tokens(home, tmp_path):
    from retrieval_kd.data.xor import xor_questions
    from retrieval_kd.xling.xor_tydi import contexts_from_run, evaluate_xor_retrieve
    from tests.tiny_models import build_tiny_st

    model = str(build_tiny_st(tmp_path / "tiny-st"))  # ranks every passage: all 5 fit in 2,000 tokens
    res = run_suite(get_suite("xling"), BenchSystem(model=model), tmp_path / "x", echo=lambda s: None,
                    tokenizer="whitespace")
    xor = _row(res, "xor-tydi")
    assert xor["status"] == "ran" and list(xor["metrics"]) == ["R@2kt", "R@5kt"]
    run = load_trec_run(xor["units"][0]["run"]["file"])
    ds = load_dataset("xor-tydi", "dev")
    direct = evaluate_xor_retrieve(xor_questions(home / "xor-tydi", "dev"), contexts_from_run(run, ds.corpus),
                                   (2, 5), tokenizer="whitespace")
    assert xor["metrics"]["R@2kt"] == pytest.approx(direct["R@2kt"].macro) == 1.0
    assert xor["units"][0]["xor"]["R@5kt"]["skipped_no_span_answer"] == 1  # the yes/no question
    assert xor["units"][0]["xor"]["R@2kt"]["tokenizer"] == "whitespace"
    assert "not comparable with published numbers" in markdown(res)
    assert [r["status"] for r in res["rows"][1:]] == ["not available"] * 10  # XQuAD-R: no copy here


def test_bench_miracl_reports_each_language_with_its_published_bm25(home, tmp_path):
    res = run_suite(get_suite("miracl"), BenchSystem(), tmp_path / "m", echo=lambda s: None)
    sw = _row(res, "miracl:sw")
    assert sw["status"] == "ran" and sw["ignore_identical_ids"] is False
    assert sw["references"][0]["value"] == 0.3826 and sw["references"][0]["metric"] == "ndcg@10"
    assert sum(r["status"] == "ran" for r in res["rows"]) == 1 and len(res["rows"]) == 18
    assert _row(res, "miracl:yo")["sources"] == ["ir_datasets miracl/yo/dev", registry_homepage("miracl")]


def registry_homepage(name: str) -> str:
    from retrieval_kd.data.registry import registry

    return registry()[name].homepage


def test_bench_refuses_bad_systems_and_unknown_suites(home):
    from retrieval_kd.errors import NotFoundError

    with pytest.raises(ValueError, match="needs --model"):
        BenchSystem(first_stage="model")
    with pytest.raises(ValueError, match="needs --reranker"):
        BenchSystem(model="minilm-l6", first_stage="bm25")
    with pytest.raises(NotFoundError, match="unknown suite 'nope'"):
        get_suite("nope")
    s = BenchSystem(model="sentence-transformers/all-MiniLM-L6-v2")
    assert s.reference_key == "minilm-l6" and not s.uses_index and BenchSystem(model="minilm-l6", index="hnsw").uses_index
    assert BenchSystem(reranker="x").reference_key is None
    with pytest.raises(ValueError, match="cross-encoder is not a retrieval model"):
        BenchSystem(model="x", family="cross-encoder")


def test_a_bad_model_is_one_line_about_the_model_not_a_generated_file(home, tmp_path):
    from retrieval_kd.cli.main import app

    r = CliRunner().invoke(app, ["bench", "beir", "--model", "no-such-model", "-o", str(tmp_path / "b")])
    assert r.exit_code != 0  # rkd's main prints an RkdError as one "error: ..." line
    msg = str(r.exception)
    assert "model 'no-such-model' is not a registered name" in msg and ".yaml" not in msg
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]


@pytest.mark.slow
def test_bench_through_an_index_and_with_a_reranker_over_bm25(home, tmp_path):
    from tests.test_backends import tiny_cross_encoder
    from tests.tiny_models import build_tiny_st

    st = str(build_tiny_st(tmp_path / "tiny-st"))
    shutil.rmtree(home / "cqadupstack")
    res = run_suite(get_suite("beir"), BenchSystem(model=st, index="flat", k=10), tmp_path / "ix",
                    echo=lambda s: None)
    sf = _row(res, "scifact")
    assert sf["status"] == "ran" and sf["units"][0]["run"]["stage"].startswith("search-scifact@test-")
    assert res["run_record"]["totals"]["ran"] == 2  # index + search
    ce = str(tiny_cross_encoder(tmp_path / "tiny-ce"))
    system = BenchSystem(reranker=ce, depth=2)
    res = run_suite(get_suite("miracl"), system, tmp_path / "rr", echo=lambda s: None)
    sw = _row(res, "miracl:sw")
    assert sw["status"] == "ran" and sw["units"][0]["run"]["stage"].startswith("reranker-miracl.sw@dev-")
    assert sw["references"] == [] and "top 2" in res["system"]["label"]
    run = load_trec_run(sw["units"][0]["run"]["file"])
    assert all(len(hits) <= 2 for hits in run.values())  # the first stage's top 2, rescored


def test_pipeline_benchmarks_section_runs_a_suite_and_writes_its_table(home, tmp_path):
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages

    shutil.rmtree(home / "cqadupstack")
    f = tmp_path / "p.yaml"
    f.write_text("name: b\ndatasets: {scifact: {source: scifact}}\nbenchmarks:\n  beir-bm25: {suite: beir, k: 10}\n")
    rec = run_stages(load_pipeline(f), tmp_path / "root", echo=lambda s: None)
    ids = [e["id"] for e in rec["stages"]]
    assert ids == ["benchmark:beir-bm25.scifact@test", "benchmark:beir-bm25"]
    final = tmp_path / "root" / rec["stages"][-1]["dir"]
    res = json.loads((final / "bench.json").read_text())
    assert _row(res, "scifact")["status"] == "ran" and _row(res, "nq")["status"] == "not available"
    assert rec["stages"][-1]["result"]["datasets_run"] == 1 and (final / "bench.md").is_file()
    assert _row(res, "scifact")["references"][0]["label"] == "BM25 flat"


def test_pipeline_benchmarks_section_checks_its_entries(home, tmp_path):
    from retrieval_kd.pipeline.load import PipelineError, load_pipeline

    f = tmp_path / "p.yaml"
    f.write_text("name: b\ndatasets: {scifact: {source: scifact}}\nbenchmarks:\n"
                 "  x: {suite: nope}\n  y: {suite: beir, model: 'student:none'}\n")
    with pytest.raises(PipelineError) as e:
        load_pipeline(f)
    assert "p.yaml:4: benchmarks.x.suite: unknown suite 'nope'" in str(e.value)
    assert "p.yaml:5: benchmarks.y.model: no student 'none'" in str(e.value)
