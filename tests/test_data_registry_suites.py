"""The registry's benchmark entries: every public BEIR set (sources, checksums, ir_datasets ids,
protocol), MS MARCO / TREC DL, XOR-TyDi, MIRACL and Mr. TyDi, each loader on a tiny fixture in
its release format, and the suites that list them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import yaml

from retrieval_kd.bench.suites import get_suite, suite_rows, suites
from retrieval_kd.data import registry as reg_mod
from retrieval_kd.data.registry import cited_sources, load_dataset, missing_local, registry
from retrieval_kd.errors import DataError, NotFoundError
from retrieval_kd.settings import DATA_HOME_ENV

FIX = Path(__file__).parent / "fixtures"
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{}.zip"
# The BEIR README's dataset table (beir-cellar/beir), also ir_datasets 0.6.3 etc/downloads.json.
BEIR_MD5 = {
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1", "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307", "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9", "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563", "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167", "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9", "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d", "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}
CQA = ["android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats", "tex", "unix",
       "webmasters", "wordpress"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty data home (the tests copy fixtures into it)."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv(DATA_HOME_ENV, str(h))
    monkeypatch.setenv("RKD_OFFLINE", "1")
    return h


def test_every_public_beir_set_has_its_zip_md5_irds_ids_and_protocol():
    reg = registry()
    assert set(get_suite("beir").datasets) == set(BEIR_MD5)
    for name, md5 in BEIR_MD5.items():
        spec = reg[name]
        assert spec.format == "beir" and spec.url == BEIR_URL.format(name) and spec.md5 == md5, name
        assert "test" in spec.splits and spec.irds_id("test", CQA[0]).startswith("beir/"), name
        assert spec.protocol.metrics[0] == "ndcg@10" and spec.protocol.ignore_identical_ids, name
        flat = [r for r in spec.references["test"] if r.label == "BM25 flat"]
        assert flat and all(r.source in cited_sources() for r in spec.references["test"]), name
    assert reg["webis-touche2020"].irds_id("test") == "beir/webis-touche2020/v2"  # BEIR's v2 zip
    assert [r.value for r in reg["scifact"].references["test"]] == [0.6789, 0.6647, 0.645]


def test_cqadupstack_is_twelve_subsets_averaged_each_a_beir_folder(home):
    spec = registry()["cqadupstack"]
    assert spec.subsets == CQA and spec.protocol.subsets == "average"
    assert spec.irds_id("test", "gis") == "beir/cqadupstack/gis" and spec.irds_id("test") is None
    shutil.copytree(FIX / "beir-tiny", home / "cqadupstack" / "android")
    ds = load_dataset("cqadupstack:android", "test")
    assert ds.name == "cqadupstack:android" and sorted(ds.queries.ids()) == ["q1", "q2", "q3"]
    with pytest.raises(NotFoundError, match="is 12 datasets"):
        load_dataset("cqadupstack", "test")
    with pytest.raises(NotFoundError, match="no subset 'cooking'"):
        load_dataset("cqadupstack:cooking", "test")
    with pytest.raises(NotFoundError, match="cqadupstack:gis.*gis/corpus.jsonl"):  # absent subset, offline
        load_dataset("cqadupstack:gis", "test")
    assert missing_local(spec, "test", "english") == ["english/corpus.jsonl", "english/queries.jsonl",
                                                      "english/qrels/test.tsv"]
    row = next(r for r in suite_rows(get_suite("beir")) if r.label == "cqadupstack")
    assert len(row.units) == 12 and list(row.missing) == [f"cqadupstack:{s}" for s in CQA[1:]]
    refs = row.references("bm25")  # the mean of the 12 published sub-forum values
    flat = [r.value for r in spec.references["test"] if r.label == "BM25 flat"]
    assert refs[0].label == "BM25 flat (mean of 12)" and refs[0].value == pytest.approx(sum(flat) / 12)


def test_msmarco_passage_has_dev_small_dl19_dl20_and_the_train_triples():
    spec = registry()["msmarco-passage"]
    assert {"dev-small", "trec-dl-2019", "trec-dl-2020", "train"} <= set(spec.splits)
    assert spec.relevance_level == {"trec-dl-2019": 2, "trec-dl-2020": 2}
    assert "msmarco-passage/train/triples-small" in spec.files["train-triples"]
    assert spec.protocol.metrics_for("dev-small")[0] == "mrr@10"
    assert spec.protocol.metrics_for("trec-dl-2019")[0] == "ndcg@10"
    assert {r.value for refs in spec.references.values() for r in refs} == {0.184, 0.5058, 0.4796}
    assert [r.split for r in suite_rows(get_suite("msmarco"))] == ["dev-small", "trec-dl-2019", "trec-dl-2020"]


def test_miracl_loader_reads_the_release_layout(home):
    shutil.copytree(FIX / "miracl", home / "miracl")
    spec = registry()["miracl"]
    assert spec.irds_id("dev", "sw") == "miracl/sw/dev" and len(spec.subsets) == 18
    ds = load_dataset("miracl:sw", "dev")
    assert ds.queries.texts == {"0#0": "Je, mji mkuu wa Kenya ni upi?", "1#0": "Simba anaishi wapi?"}
    assert ds.corpus.ids() == ["100#0", "100#1", "200#0", "300#0"]  # two gzipped files, in order
    assert ds.corpus.docs["200#0"].title == "Simba" and ds.qrels["0#0"] == {"100#0": 1, "100#1": 0}
    assert missing_local(spec, "dev", "sw") == [] and missing_local(spec, "dev", "yo")
    with pytest.raises(NotFoundError, match="miracl-v1.0-yo/topics/topics.miracl-v1.0-yo-dev.tsv"):
        load_dataset("miracl:yo", "dev")


def test_miracl_corpus_errors_name_file_and_line(home):
    shutil.copytree(FIX / "miracl", home / "miracl")
    bad = home / "miracl" / "miracl-corpus-v1.0-sw" / "docs-1.jsonl.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as f:
        f.write('{"docid": "200#0", "title": "", "text": "x"}\n{"docid": "100#0", "title": "", "text": "dup"}\n')
    with pytest.raises(DataError, match=r"docs-1.jsonl.gz:2: duplicate passage id '100#0'"):
        load_dataset("miracl:sw", "dev")


def test_mrtydi_loader_reads_the_release_layout(home):
    shutil.copytree(FIX / "mr-tydi", home / "mr-tydi")
    spec = registry()["mr-tydi"]
    assert spec.irds_id("dev", "sw") == "mr-tydi/sw/dev"
    ds = load_dataset("mr-tydi:sw", "dev")
    assert sorted(ds.queries.ids()) == ["1", "2"] and len(ds.corpus) == 3
    assert ds.corpus.docs["10#0"].text == "Nairobi ni mji mkuu wa Kenya." and ds.qrels["2"] == {"20#0": 1}
    with pytest.raises(NotFoundError, match="'mr-tydi' has no subset 'xx'"):
        load_dataset("mr-tydi:xx", "dev")
    from retrieval_kd.data.multiling import load_mrtydi

    with pytest.raises(NotFoundError, match="no language 'xx'"):
        load_mrtydi(home / "mr-tydi", "xx", "dev")


def test_xor_retrieve_loads_questions_and_passages_and_its_suite_metric_is_rkt(home):
    shutil.copytree(FIX / "xortydi-tiny", home / "xor-tydi")
    spec = registry()["xor-tydi"]
    assert spec.protocol.metrics == ["R@2kt", "R@5kt"] and not spec.ir_datasets
    ds = load_dataset("xor-tydi", "dev")
    assert ds.qrels == {} and len(ds.queries) == 6 and ds.corpus.docs["d1"].title == "Tokyo"
    from retrieval_kd.data.xor import xor_questions

    qs = xor_questions(home / "xor-tydi", "dev")
    assert qs["-101"].answers == ("Tokyo",) and qs["-101"].lang == "ja"
    (home / "xor-tydi" / "passages.jsonl").unlink()
    (home / "xor-tydi" / "passages.tsv").unlink()
    with pytest.raises(NotFoundError, match="missing: passages"):
        load_dataset("xor-tydi", "dev")


def test_missing_dataset_offline_names_the_folder_and_the_files(home):
    with pytest.raises(NotFoundError, match=r"'nq' not found offline: looked in .*home/nq.*"
                                            r"corpus.jsonl, queries.jsonl, qrels/test.tsv"):
        load_dataset("nq", "test")
    assert registry()["nq"].download_sources("test") == [
        f"{BEIR_URL.format('nq')} (md5 {BEIR_MD5['nq']})", "ir_datasets beir/nq"]


def test_every_suite_resolves_and_lists_where_missing_data_was_looked_for(home):
    for suite in suites().values():
        rows = suite_rows(suite)
        assert rows and all(not r.available for r in rows), suite.name  # empty data home
        where = rows[0].where()
        assert where["local"].startswith(str(home)) and where["sources"], suite.name
    assert len(suite_rows(get_suite("miracl"))) == 18 and len(suite_rows(get_suite("mr-tydi"))) == 11


def test_a_reference_citing_an_unknown_source_is_an_error(tmp_path, monkeypatch):
    raw = yaml.safe_load(reg_mod.REGISTRY_FILE.read_text(encoding="utf-8"))
    raw["scifact"]["references"]["test"][0]["source"] = "nowhere"
    bad = tmp_path / "datasets.yaml"
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setattr(reg_mod, "REGISTRY_FILE", bad)
    registry.cache_clear()
    try:
        with pytest.raises(DataError, match="entry 'scifact': reference source 'nowhere' is not in _sources"):
            registry()
    finally:
        registry.cache_clear()
