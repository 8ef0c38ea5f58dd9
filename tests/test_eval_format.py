"""Result records, Markdown tables, run location (eval/results.py) and drop_identical_ids.

``evaluate_run`` (ranx, slow to compile) is tested elsewhere; nothing here computes a metric.
"""

from __future__ import annotations

import json

from retrieval_kd.artifacts import MANIFEST, sha256_file, write_json
from retrieval_kd.data.runfiles import RUN_FILE, locate_run
from retrieval_kd.data.trec import write_trec_run
from retrieval_kd.data.types import Corpus, Dataset, Document, Queries
from retrieval_kd.eval.metrics import drop_identical_ids
from retrieval_kd.eval.results import (
    load_run_with_provenance,
    markdown_table,
    result_record,
    system_name,
    write_results,
)

RUN = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 0.5}}


def tiny_dataset() -> Dataset:
    return Dataset(
        name="tiny", split="test",
        corpus=Corpus({"d1": Document("a"), "d2": Document("b"), "d3": Document("c")}),
        queries=Queries({"q1": "x", "q2": "y"}),
        qrels={"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 0}},
    )


def record(name: str, ndcg: float, mrr: float) -> dict:
    return result_record(name, {"ndcg@10": ndcg, "mrr@10": mrr}, tiny_dataset(),
                         {"run_file": "r.trec"}, ["ndcg@10", "mrr@10"], True, 2)


# --------------------------------------------------------------------------- records / tables


def test_result_record_carries_protocol():
    r = record("bm25", 0.123456, 0.5)
    assert r["system"] == "bm25"
    assert r["metrics"] == {"ndcg@10": 0.1235, "mrr@10": 0.5}
    p = r["protocol"]
    assert (p["dataset"], p["split"], p["n_docs"], p["judged_queries"], p["run_queries"]) == \
        ("tiny", "test", 3, 2, 2)
    assert p["cutoffs"] == [10] and p["metrics"] == ["ndcg@10", "mrr@10"]
    assert p["ignore_identical_ids"] is True and p["evaluator"].startswith("ranx ")
    assert p["corpus_sha256"] == tiny_dataset().corpus.fingerprint
    json.dumps(r)


def test_markdown_table():
    md = markdown_table([record("bm25", 0.123456, 0.5), record("dense", 0.7, 0.25)])
    head, table = md.split("\n\n")
    assert head == ("**tiny** / test (2 judged queries, 3 docs; ranx, "
                    "ignore_identical_ids=True)")
    assert table.splitlines() == [
        "| system | ndcg@10 | mrr@10 |",
        "|---|---:|---:|",
        "| bm25 | 0.1235 | 0.5000 |",
        "| dense | 0.7000 | 0.2500 |",
    ]
    assert md.endswith("|\n")
    assert markdown_table([]) == ""


def test_write_results_writes_json_and_md(tmp_path):
    recs = [record("bm25", 0.25, 0.5)]
    js, md = write_results(recs, tmp_path / "out" / "results")
    assert (js, md) == (tmp_path / "out" / "results.json", tmp_path / "out" / "results.md")
    assert json.loads(js.read_text()) == {"results": recs}
    assert md.read_text() == markdown_table(recs)
    assert sorted(p.name for p in js.parent.iterdir()) == ["results.json", "results.md"]


def test_write_results_accepts_json_or_md_suffix(tmp_path):
    recs = [record("bm25", 0.25, 0.5)]
    for given in ("a.json", "a.md"):
        js, md = write_results(recs, tmp_path / given)
        assert (js.name, md.name) == ("a.json", "a.md")


def test_write_results_keeps_dots_in_the_name(tmp_path):
    """``<out>.json`` for ``-o results/bm25-k1.2`` is ``bm25-k1.2.json``.

    Currently fails: ``Path.with_suffix`` treats ``.2`` as a suffix and replaces it, so the
    files written are ``bm25-k1.json`` / ``bm25-k1.md`` (and two such names collide).
    """
    js, md = write_results([record("bm25", 0.25, 0.5)], tmp_path / "bm25-k1.2")
    assert (js.name, md.name) == ("bm25-k1.2.json", "bm25-k1.2.md")
    assert js.is_file() and md.is_file()


# --------------------------------------------------------------------------- locating runs


def test_locate_run_directory_with_manifest(tmp_path):
    d = tmp_path / "runs" / "bm25"
    write_trec_run(RUN, d / RUN_FILE)
    write_json(d / MANIFEST, {"kind": "retrieve.bm25", "params": {"k1": 0.9},
                              "inputs": {"model": "m"}})
    run_file, man = locate_run(d)
    assert run_file == d / RUN_FILE and man["kind"] == "retrieve.bm25"
    assert locate_run(str(d)) == (run_file, man)
    # the run file inside a run directory finds the same manifest
    assert locate_run(d / RUN_FILE) == (run_file, man)
    name, run, system = load_run_with_provenance(d)
    assert name == "bm25" and run == RUN
    assert system == {"run_file": str(run_file), "run_sha256": sha256_file(run_file),
                      "stage": "retrieve.bm25", "params": {"k1": 0.9}, "model": "m"}


def test_locate_run_bare_file(tmp_path):
    f = tmp_path / "my_system.trec"
    write_trec_run(RUN, f)
    assert locate_run(f) == (f, None)
    name, run, system = load_run_with_provenance(f)
    assert name == "my_system" and run == RUN
    assert set(system) == {"run_file", "run_sha256"}


def test_locate_run_directory_without_manifest(tmp_path):
    assert locate_run(tmp_path) == (tmp_path / RUN_FILE, None)


def test_system_name_prefers_manifest_name(tmp_path):
    f = tmp_path / "x" / RUN_FILE
    assert system_name(f, {"params": {"name": "teacher-ce"}}) == "teacher-ce"
    assert system_name(f, {"params": {}}) == "x"
    assert system_name(tmp_path / "y.trec", None) == "y"


# --------------------------------------------------------------------------- drop_identical_ids


def test_drop_identical_ids_removes_only_docs_named_like_their_query():
    run = {"q1": {"q1": 9.0, "d1": 1.0, "q2": 0.5}, "q2": {"q2": 3.0}, "d1": {"d2": 1.0}}
    out = drop_identical_ids(run)
    assert out == {"q1": {"d1": 1.0, "q2": 0.5}, "q2": {}, "d1": {"d2": 1.0}}
    assert run["q1"]["q1"] == 9.0 and run["q2"] == {"q2": 3.0}  # input not mutated
    assert list(out) == ["q1", "q2", "d1"]
    assert drop_identical_ids({}) == {}
