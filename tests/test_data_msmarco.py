"""MS MARCO passage in the registry: entries, the local release layout, the ir_datasets path,
the offline / failed-download messages, and the TREC DL protocol (binary metrics at grade >= 2,
nDCG on the grades) reaching evaluation.

``tests/fixtures/msmarco/msmarco-passage`` is a tiny copy in the release's file formats.
"""

from __future__ import annotations

import json
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval_kd.data import irds
from retrieval_kd.data import registry as reg_mod
from retrieval_kd.data.msmarco import SPLIT_FILES, load_msmarco_passage
from retrieval_kd.data.registry import load_dataset, registry
from retrieval_kd.data.trec import write_trec_run
from retrieval_kd.errors import DataError, NotFoundError
from retrieval_kd.eval.compare import significance
from retrieval_kd.eval.metrics import evaluate_run, ranx_metric

FIXTURE_HOME = Path(__file__).parent / "fixtures" / "msmarco"
ROOT = FIXTURE_HOME / "msmarco-passage"


@pytest.fixture()
def offline_home(monkeypatch):
    """Offline, data home = the fixture; any download attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RKD_DATA_HOME", str(FIXTURE_HOME))
    monkeypatch.setattr(reg_mod, "download_beir_zip", lambda *a, **k: pytest.fail("download attempted"))
    monkeypatch.setattr(irds, "load_ir_datasets", lambda *a, **k: pytest.fail("ir_datasets attempted"))
    return monkeypatch


@pytest.fixture()
def online(monkeypatch, tmp_path):
    """Not offline, and an empty data home: the ir_datasets path is taken."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RKD_OFFLINE", raising=False)
    monkeypatch.setenv("RKD_DATA_HOME", str(tmp_path / "home"))
    return monkeypatch


# --------------------------------------------------------------------------- registry entry


def test_registry_entry_ids_splits_counts_and_protocol():
    spec = registry()["msmarco-passage"]
    assert (spec.format, spec.dir) == ("msmarco-passage", "msmarco-passage")
    assert spec.splits == ["train", "dev-small", "trec-dl-2019", "trec-dl-2020"]
    assert spec.ir_datasets == {
        "train": "msmarco-passage/train/judged",
        "dev-small": "msmarco-passage/dev/small",
        "trec-dl-2019": "msmarco-passage/trec-dl-2019/judged",
        "trec-dl-2020": "msmarco-passage/trec-dl-2020/judged",
    }
    assert spec.relevance_level == {"trec-dl-2019": 2, "trec-dl-2020": 2}
    # Published sizes (ir_datasets documentation / metadata).
    assert {s: (c["docs"], c["queries"], c["qrels"]) for s, c in spec.counts.items()} == {
        "train": (8841823, 502939, 532761),
        "dev-small": (8841823, 6980, 7437),
        "trec-dl-2019": (8841823, 43, 9260),
        "trec-dl-2020": (8841823, 54, 11386),
    }
    assert set(SPLIT_FILES) == set(spec.splits)  # every split has a local layout


def test_registry_rejects_protocol_for_an_unknown_split(tmp_path, monkeypatch):
    bad = tmp_path / "datasets.yaml"
    bad.write_text("x:\n  format: trec\n  dir: x\n  splits: [test]\n  relevance_level: {dev: 2}\n")
    monkeypatch.setattr(reg_mod, "REGISTRY_FILE", bad)
    registry.cache_clear()
    try:
        with pytest.raises(DataError, match=r"entry 'x'.*\['dev'\]"):
            registry()
    finally:
        registry.cache_clear()


# --------------------------------------------------------------------------- local release layout


def test_dev_small_from_the_local_layout(offline_home):
    ds = load_dataset("msmarco-passage", "dev-small")
    assert (ds.name, ds.split, len(ds.corpus)) == ("msmarco-passage", "dev-small", 8)
    assert ds.queries.texts == {"1048585": "what is a hydrogen bond", "2": "caffeine sources"}  # unjudged left out
    assert ds.qrels == {"1048585": {"6": 1}, "2": {"7": 1}}
    assert ds.corpus.docs["6"].text.startswith("A hydrogen bond")
    assert ds.sources["qrels"].endswith("qrels.dev.small.tsv") and ds.report.ok
    assert ds.relevance_level == 1 and "relevance_level" not in ds.protocol()


@pytest.mark.parametrize("split, queries, qrels", [
    ("trec-dl-2019", ["1037798", "19335"],
     {"1037798": {"2": 3, "3": 1, "0": 0}, "19335": {"4": 2, "5": 1, "6": 0}}),
    ("trec-dl-2020", ["1030303"], {"1030303": {"1": 2, "0": 3, "7": 0}}),
    ("train", ["634306"], {"634306": {"5": 1}}),
])
def test_dl_and_train_splits_keep_grades_and_protocol(offline_home, split, queries, qrels):
    ds = load_dataset("msmarco-passage", split)
    assert ds.queries.ids() == queries and ds.qrels == qrels
    level = 2 if split.startswith("trec-dl") else 1
    assert ds.relevance_level == level
    assert ds.protocol().get("relevance_level") == (2 if level == 2 else None)


def test_a_path_load_has_no_protocol_from_the_registry(tmp_path):
    ds = load_msmarco_passage(ROOT, "trec-dl-2019")
    assert ds.relevance_level == 1  # the flag comes from the registry entry, not the files


def test_local_folder_missing_a_split_file_names_the_layout(tmp_path, offline_home):
    home = tmp_path / "home"
    (home / "msmarco-passage").mkdir(parents=True)
    (home / "msmarco-passage" / "collection.tsv").write_text("0\tsome passage\n")
    offline_home.setenv("RKD_DATA_HOME", str(home))
    with pytest.raises(NotFoundError) as ei:
        load_dataset("msmarco-passage", "trec-dl-2020")
    msg = str(ei.value)
    assert "missing: msmarco-test2020-queries.tsv, 2020qrels-pass.txt" in msg
    assert "collection.tsv" in msg and "2019" not in msg


def test_offline_without_a_copy_says_where_and_what_to_put(tmp_path, offline_home):
    offline_home.setenv("RKD_DATA_HOME", str(tmp_path))
    with pytest.raises(NotFoundError) as ei:
        load_dataset("msmarco-passage", "dev-small")
    msg = str(ei.value)
    assert "\n" not in msg and "not found offline" in msg
    assert str((tmp_path / "msmarco-passage").resolve()) in msg
    assert "collection.tsv, queries.dev.small.tsv, qrels.dev.small.tsv" in msg


# --------------------------------------------------------------------------- ir_datasets path


def test_failed_ir_datasets_download_is_one_line_naming_id_and_local_layout(online, tmp_path):
    seen = []

    def no_network(dataset_id, name=None, split="test"):
        seen.append(dataset_id)
        raise ConnectionError("HTTPSConnectionPool(host='msmarco.z22.web.core.windows.net'):\n"
                              "  Max retries exceeded")

    online.setattr(irds, "load_ir_datasets", no_network)
    with pytest.raises(NotFoundError) as ei:
        load_dataset("msmarco-passage", "trec-dl-2019")
    msg = str(ei.value)
    assert seen == ["msmarco-passage/trec-dl-2019/judged"]
    assert "\n" not in msg
    assert "ir_datasets msmarco-passage/trec-dl-2019/judged: ConnectionError" in msg
    assert "Max retries exceeded" in msg
    local = str((tmp_path / "home" / "msmarco-passage").resolve())
    assert (f"put collection.tsv, msmarco-test2019-queries.tsv, 2019qrels-pass.txt in {local}"
            in msg)


def test_ir_datasets_source_keeps_grades_and_gets_the_protocol(online):
    """``load_ir_datasets`` itself, on a stand-in ``ir_datasets`` module (no download)."""
    Doc, Query = namedtuple("Doc", "doc_id text"), namedtuple("Query", "query_id text")
    Qrel = namedtuple("Qrel", "query_id doc_id relevance iteration")
    loaded = []

    class FakeDs:
        def docs_iter(self):
            return iter([Doc("0", "p zero"), Doc("1", "p one"), Doc("2", "p two")])

        def queries_iter(self):
            return iter([Query("q1", "first"), Query("q2", "second")])

        def qrels_iter(self):
            return iter([Qrel("q1", "0", 3, "0"), Qrel("q1", "1", 1, "0")])

    fake = types.SimpleNamespace(load=lambda i: loaded.append(i) or FakeDs())
    online.setitem(sys.modules, "ir_datasets", fake)
    ds = load_dataset("msmarco-passage", "trec-dl-2020")
    assert loaded == ["msmarco-passage/trec-dl-2020/judged"]
    assert ds.sources == {"ir_datasets": "msmarco-passage/trec-dl-2020/judged"}
    assert ds.qrels == {"q1": {"0": 3, "1": 1}} and ds.queries.ids() == ["q1"]
    assert ds.relevance_level == 2 and ds.protocol()["relevance_level"] == 2


# --------------------------------------------------------------------------- protocol reaches evaluation


# Each DL 2019 query retrieves its grade-1 passage first, then a grade-0 one: related, not relevant.
RELATED_ONLY = {"1037798": {"3": 2.0, "0": 1.0}, "19335": {"5": 2.0, "6": 1.0}}
# nDCG@10 (linear gains, as trec_eval): DCG 1 each; IDCG 3 + 1/log2(3) and 2 + 1/log2(3).
_L3 = 1 / 1.584962500721156
NDCG_RELATED_ONLY = (1 / (3 + _L3) + 1 / (2 + _L3)) / 2


def test_ranx_metric_names():
    assert ranx_metric("recall@100", 2) == "recall@100-l2"
    assert ranx_metric("map", 2) == "map-l2" and ranx_metric("mrr@10", 2) == "mrr@10-l2"
    assert ranx_metric("ndcg@10", 2) == "ndcg@10"
    assert ranx_metric("recall@100", 1) == "recall@100"
    assert ranx_metric("recall@100-l3", 2) == "recall@100-l3"


def test_grade_one_counts_for_ndcg_not_for_recall_at_level_two(offline_home):
    ds = load_dataset("msmarco-passage", "trec-dl-2019")
    metrics = ["ndcg@10", "recall@10", "mrr@10", "map"]
    dl = evaluate_run(ds.qrels, RELATED_ONLY, metrics, relevance_level=ds.relevance_level)
    assert dl["recall@10"] == 0.0 and dl["mrr@10"] == 0.0 and dl["map"] == 0.0
    assert dl["ndcg@10"] == pytest.approx(NDCG_RELATED_ONLY, abs=1e-6)
    lenient = evaluate_run(ds.qrels, RELATED_ONLY, metrics)  # level 1: grade 1 is relevant
    assert lenient["recall@10"] == pytest.approx(0.5) and lenient["mrr@10"] == pytest.approx(1.0)
    assert lenient["ndcg@10"] == pytest.approx(dl["ndcg@10"])
    per_q = evaluate_run(ds.qrels, RELATED_ONLY, ["recall@10"], per_query=True, relevance_level=2)
    assert per_q == {"recall@10": {"1037798": 0.0, "19335": 0.0}}


def test_significance_uses_the_same_level(offline_home):
    ds = load_dataset("msmarco-passage", "trec-dl-2019")
    # "better" finds the grade-3 passage of the first query; the second query as "related".
    better = {"1037798": {"2": 3.0, "3": 2.0}, "19335": RELATED_ONLY["19335"]}
    runs = {"related": RELATED_ONLY, "better": better}
    at2 = significance(ds.qrels, runs, "related", ["recall@10"], relevance_level=2)
    at1 = significance(ds.qrels, runs, "related", ["recall@10"])
    assert at2["better"]["recall@10"]["delta"] == pytest.approx(0.5)  # (1 - 0 + 0) / 2
    assert at1["better"]["recall@10"]["delta"] == pytest.approx(0.25)  # (1 - 0.5 + 0) / 2


def test_rkd_eval_applies_and_records_the_dl_protocol(offline_home, tmp_path):
    from retrieval_kd.cli.main import app

    run = tmp_path / "related.trec"
    write_trec_run(RELATED_ONLY, run)
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["eval", str(run), "-d", "msmarco-passage", "-s", "trec-dl-2019",
                                   "--metrics", "ndcg@10,recall@10,recall@10-l1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.with_suffix(".json").read_text())["results"][0]
    assert rec["metrics"]["recall@10"] == 0.0
    assert rec["metrics"]["recall@10-l1"] == 0.5  # a metric naming its own level keeps it
    assert rec["protocol"]["cutoffs"] == [10]
    assert rec["metrics"]["ndcg@10"] == round(NDCG_RELATED_ONLY, 4)
    assert rec["protocol"]["relevance_level"] == 2 and rec["protocol"]["split"] == "trec-dl-2019"
