"""Arrow-backed corpora (retrieval_kd/data/arrow_corpus.py): the same documents, fingerprint and
index as the in-memory reader, the same errors by line, a copy built once per content, and an
encode that reads one chunk of texts at a time."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from retrieval_kd.data.arrow_corpus import ARROW_ENV, ArrowCorpus, ArrowTexts, open_arrow_corpus
from retrieval_kd.data.beir import load_beir, load_corpus_jsonl
from retrieval_kd.data.types import Corpus
from retrieval_kd.errors import DataError
from tests.test_pipeline import write_corpus


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def beir(tmp_path):
    return write_corpus(tmp_path / "tiny", n_docs=40, n_queries=10)


def dict_corpus(path) -> Corpus:
    corpus = load_corpus_jsonl(path)  # the default threshold: a tiny file is read into a dict
    assert type(corpus) is Corpus
    return corpus


def test_arrow_corpus_reads_what_the_dict_reader_reads(beir, monkeypatch):
    ref = dict_corpus(beir / "corpus.jsonl")
    monkeypatch.setenv(ARROW_ENV, "0")  # every corpus through Arrow
    arrow = load_corpus_jsonl(beir / "corpus.jsonl")
    assert isinstance(arrow, ArrowCorpus) and isinstance(arrow, Corpus)
    assert len(arrow) == len(ref) == 40
    assert arrow.ids() == ref.ids()
    assert arrow.fingerprint == ref.fingerprint
    for sep in (" ", " [SEP] "):
        texts = arrow.texts(sep)
        assert isinstance(texts, ArrowTexts)
        assert list(texts) == ref.texts(sep)
        assert texts[3:9] == ref.texts(sep)[3:9] and texts[-1] == ref.texts(sep)[-1]
    assert dict(arrow.docs.items()) == ref.docs
    assert arrow.docs["d7"] == ref.docs["d7"] and "d7" in arrow.docs and "nope" not in arrow.docs
    assert list(arrow.docs) == list(ref.docs) and len(arrow.docs) == 40
    assert arrow.absent(["d1", "x", "d39", "y"]) == ref.absent(["d1", "x", "d39", "y"]) == {"x", "y"}
    assert arrow == ref
    again = pickle.loads(pickle.dumps(arrow))  # Ray ships a corpus to its workers: by folder, not rows
    assert len(pickle.dumps(arrow)) < 500 and again.fingerprint == arrow.fingerprint
    assert list(again.texts()) == ref.texts()

    ds_ref = None
    monkeypatch.delenv(ARROW_ENV)
    ds_ref = load_beir(beir, "test")
    monkeypatch.setenv(ARROW_ENV, "0")
    ds = load_beir(beir, "test")
    assert isinstance(ds.corpus, ArrowCorpus)
    assert ds.protocol() == ds_ref.protocol()  # manifests and keys do not change with the reader


def test_the_copy_is_built_once_per_content(beir, cache):
    path = beir / "corpus.jsonl"
    a = open_arrow_corpus(path)
    built = (a.folder / "corpus.arrow").stat().st_mtime_ns
    b = open_arrow_corpus(path)
    assert b.folder == a.folder and (b.folder / "corpus.arrow").stat().st_mtime_ns == built
    assert json.loads((a.folder / "meta.json").read_text())["n_docs"] == 40
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:-1], lines[-1].replace('"text": "', '"text": "changed ')]) + "\n")
    c = open_arrow_corpus(path)
    assert c.folder != a.folder and c.fingerprint != a.fingerprint
    assert c.docs["d39"].text.startswith("changed ")
    assert len(list((cache / "corpora").glob("*/meta.json"))) == 2
    assert not list((cache / "corpora").glob(".*tmp*"))


@pytest.mark.parametrize("bad, message, line", [
    ('{"_id": "d0", "text": "again"}', "duplicate document id 'd0'", 3),
    ('{"_id": "e", "title": "", "text": "  "}', "document 'e' has empty title and text", 3),
    ('{"_id": "e", "text": 5}', "field 'text' must be a string", 3),
    ('{"_id": "e", "text": "x"', "malformed JSON", 3),
    ('{"text": "x"}', "missing field '_id'", 3),
])
def test_bad_lines_are_the_dict_readers_errors_and_leave_no_copy(tmp_path, cache, monkeypatch, bad, message,
                                                                  line):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d0", "text": "a b"}\n{"_id": "d1", "title": "t", "text": "c"}\n' + bad + "\n")
    with pytest.raises(DataError) as ref:
        load_corpus_jsonl(path)
    monkeypatch.setenv(ARROW_ENV, "0")
    with pytest.raises(DataError) as e:
        load_corpus_jsonl(path)
    assert str(e.value) == str(ref.value)
    assert message in str(e.value) and f":{line}" in str(e.value) and str(path) in str(e.value)
    assert not list((cache / "corpora").glob("*/meta.json")) and not list((cache / "corpora").glob(".*"))


def test_an_empty_corpus_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n")
    monkeypatch.setenv(ARROW_ENV, "0")
    with pytest.raises(DataError, match="no documents"):
        load_corpus_jsonl(path)


def test_a_bad_threshold_is_one_error(beir, monkeypatch):
    monkeypatch.setenv(ARROW_ENV, "lots")
    with pytest.raises(DataError, match="'lots' is not a size in MiB"):
        load_corpus_jsonl(beir / "corpus.jsonl")


@pytest.mark.slow
def test_an_index_of_an_arrow_corpus_is_the_dict_corpus_index(beir, tmp_path, monkeypatch):
    """The same vectors, ids and manifest inputs; the encoder is fed chunk by chunk."""
    from retrieval_kd.index import chunks
    from retrieval_kd.index.build import build_index
    from retrieval_kd.index.faiss_index import FaissParams, read_index
    from tests.test_index_tiny import tiny_st

    model = tiny_st(tmp_path / "st")
    fp = FaissParams(index="flat")
    build_index("dense", str(beir), tmp_path / "ref", str(model), split="test", chunk_size=16, faiss_params=fp)
    seen: list[int] = []
    real = chunks.encode_chunked

    def spy(store, texts, encode, *a, **kw):
        assert isinstance(texts, ArrowTexts)  # never a list of every passage
        return real(store, texts, lambda batch: (seen.append(len(batch)), encode(batch))[1], *a, **kw)

    monkeypatch.setattr("retrieval_kd.index.build.encode_chunked", spy)
    monkeypatch.setenv(ARROW_ENV, "0")
    build_index("dense", str(beir), tmp_path / "arrow", str(model), split="test", chunk_size=16, faiss_params=fp)
    assert seen == [16, 16, 8]
    a, b = (read_index(tmp_path / d / "index.faiss") for d in ("arrow", "ref"))
    np.testing.assert_array_equal(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal))
    assert (tmp_path / "arrow/doc_ids.json").read_text() == (tmp_path / "ref/doc_ids.json").read_text()
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text())["inputs"] for d in ("arrow", "ref"))
    assert ma == mb


@pytest.mark.parametrize("bad, message", [
    ("d0\tagain", "duplicate document id 'd0'"),
    ("e\t  ", "document 'e' has empty"),
    ("no tab here", "expected 'docid<TAB>text'"),
])
def test_a_tsv_collection_reads_as_the_dict_reader_does(tmp_path, monkeypatch, bad, message):
    """MS MARCO's collection.tsv: the same documents and fingerprint through Arrow, the same errors by line."""
    from retrieval_kd.data.trec import load_corpus_tsv

    path = tmp_path / "collection.tsv"
    path.write_text("d0\ta b\td\n\nd1\tc\n")
    ref = load_corpus_tsv(path)
    monkeypatch.setenv(ARROW_ENV, "0")
    arrow = load_corpus_tsv(path)
    assert isinstance(arrow, ArrowCorpus) and arrow.ids() == ref.ids() == ["d0", "d1"]
    assert list(arrow.texts()) == ref.texts() == ["a b\td", "c"] and arrow.fingerprint == ref.fingerprint
    path.write_text("d0\ta b\n" + bad + "\n")
    monkeypatch.delenv(ARROW_ENV)
    with pytest.raises(DataError) as want:
        load_corpus_tsv(path)
    monkeypatch.setenv(ARROW_ENV, "0")
    with pytest.raises(DataError) as got:
        load_corpus_tsv(path)
    assert message in str(want.value) and ":2" in str(want.value)
    assert message in str(got.value) and ":2" in str(got.value) and str(path) in str(got.value)
