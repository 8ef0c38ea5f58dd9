"""Dataset loaders (BEIR, TREC), line readers, typed containers and the dataset registry.

Every input is a small hand-made file under ``tmp_path``; the last tests load the real
SciFact copy from the shared data folder (see ``shared_data`` in conftest.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from retrieval_kd.data import registry as reg_mod
from retrieval_kd.data.beir import (
    beir_splits,
    load_beir,
    load_corpus_jsonl,
    load_qrels_tsv,
    load_queries_jsonl,
)
from retrieval_kd.data.readers import parse_relevance, read_jsonl, read_tsv, require_str
from retrieval_kd.data.registry import (
    DatasetSpec,
    describe,
    download_beir_zip,
    load_dataset,
    registry,
)
from retrieval_kd.data.trec import (
    format_trec_run,
    load_corpus_tsv,
    load_topics,
    load_trec_dir,
    load_trec_qrels,
    load_trec_run,
    sorted_hits,
    write_trec_run,
)
from retrieval_kd.data.types import (
    Corpus,
    Dataset,
    Document,
    Queries,
    ValidationReport,
    cross_check,
    qrels_fingerprint,
)
from retrieval_kd.errors import DataError, IntegrityError, NotFoundError, RkdError
from tests.beir import TINY_DOCS as DOCS
from tests.beir import tiny_beir

# --------------------------------------------------------------------------- helpers


def jl(*objs) -> str:
    """JSONL text; a ``str`` item is written verbatim (for blank or malformed lines)."""
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_trec(root: Path) -> Path:
    write(root / "corpus.tsv", "d1\ttumor cells grow\nd2\tblood pressure trial\n")
    write(root / "queries.tsv", "q1\ttumor growth\nq2\tblood pressure\nq3\tnot judged\n")
    write(root / "qrels.txt", "q1 0 d1 2\nq2 0 d2 1\nq2 0 d1 0\n")
    return root


@contextlib.contextmanager
def raises_data_error(path: Path, line: int | None, *words: str):
    """A DataError for ``path`` at ``line`` whose message names the problem (``words``)."""
    with pytest.raises(DataError) as ei:
        yield ei
    err = ei.value
    assert err.path == str(path)
    assert err.line == line, f"line {err.line} != {line}: {err}"
    for w in words:
        assert w in err.problem, f"{w!r} not in {err.problem!r}"
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(err) == f"{where}: {err.problem}"


# --------------------------------------------------------------------------- errors


def test_data_error_formats_path_line_and_problem(tmp_path):
    e = DataError(tmp_path / "x.tsv", "bad thing", 7)
    assert (e.path, e.line, e.problem) == (str(tmp_path / "x.tsv"), 7, "bad thing")
    assert str(e) == f"{tmp_path / 'x.tsv'}:7: bad thing"
    assert str(DataError("f", "p")) == "f: p"
    assert isinstance(e, RkdError) and issubclass(NotFoundError, RkdError)


# --------------------------------------------------------------------------- readers


def test_read_jsonl_yields_line_numbers_skipping_blank_lines(tmp_path):
    p = write(tmp_path / "a.jsonl", jl({"a": 1}, "", "   ", {"b": 2}))
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (4, {"b": 2})]


def test_read_jsonl_malformed_line_counts_blank_lines(tmp_path):
    p = write(tmp_path / "a.jsonl", jl({"a": 1}, "", '{"b": ', {"c": 3}))
    with raises_data_error(p, 3, "malformed JSON"):
        list(read_jsonl(p))


def test_read_jsonl_non_object_line(tmp_path):
    p = write(tmp_path / "a.jsonl", jl({"a": 1}, "[1, 2]"))
    with raises_data_error(p, 2, "expected a JSON object", "list"):
        list(read_jsonl(p))


def test_readers_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="file not found"):
        list(read_jsonl(tmp_path / "nope.jsonl"))
    with pytest.raises(NotFoundError, match="file not found"):
        list(read_tsv(tmp_path / "nope.tsv", 3))


def test_read_tsv_checks_column_count_and_strips_newlines(tmp_path):
    p = write(tmp_path / "a.tsv", "a\tb\r\n\nc\td\te\n")
    with raises_data_error(p, 3, "expected 2 columns, found 3"):
        list(read_tsv(p, 2))
    assert list(read_tsv(p, (2, 3))) == [(1, ["a", "b"]), (3, ["c", "d", "e"])]
    with raises_data_error(p, 1, "expected 4 or 5 columns, found 2"):
        list(read_tsv(p, (4, 5)))


def test_read_tsv_whitespace_mode(tmp_path):
    p = write(tmp_path / "a.txt", "q1  0\td1   1\n")
    assert list(read_tsv(p, 4, sep=None)) == [(1, ["q1", "0", "d1", "1"])]


def test_require_str(tmp_path):
    p = tmp_path / "f.jsonl"
    assert require_str(p, 1, {"_id": 12}, "_id", required=True) == "12"
    assert require_str(p, 1, {"title": None}, "title", required=False) == ""
    assert require_str(p, 1, {}, "title", required=False) == ""
    with raises_data_error(p, 4, "missing field 'text'"):
        require_str(p, 4, {"text": None}, "text", required=True)
    with raises_data_error(p, 2, "field 'title' must be a string", "int"):
        require_str(p, 2, {"title": 5}, "title", required=False)
    with raises_data_error(p, 3, "field '_id' must be a string", "bool"):
        require_str(p, 3, {"_id": True}, "_id", required=True)


@pytest.mark.parametrize("raw, want", [("0", 0), ("2", 2), ("-1", -1), ("1.0", 1), ("3e0", 3)])
def test_parse_relevance_accepts_integer_grades(tmp_path, raw, want):
    assert parse_relevance(tmp_path / "q.tsv", 1, raw) == want


# --------------------------------------------------------------------------- BEIR corpus


def test_load_corpus_jsonl_good(tmp_path):
    p = write(tmp_path / "corpus.jsonl",
              jl({"_id": "b", "title": "T", "text": "x"}, "", {"_id": 7, "text": "y"},
                 {"_id": "a", "title": "only title", "text": ""}))
    c = load_corpus_jsonl(p)
    assert c.ids() == ["b", "7", "a"]  # file order, numeric id as string
    assert c.docs["7"] == Document(text="y", title="")
    assert c.texts() == ["T x", "y", "only title "]
    assert c.texts(sep=" | ") == ["T | x", "y", "only title | "]
    assert len(c) == 3


@pytest.mark.parametrize(
    "lines, line, words",
    [
        ([{"_id": "d1", "text": "a"}, "", "{not json"], 3, ["malformed JSON"]),
        (['"just a string"'], 1, ["expected a JSON object", "str"]),
        ([{"_id": "d1", "text": "a"}, {"title": "t", "text": "b"}], 2, ["missing field '_id'"]),
        ([{"_id": "d1", "title": "t"}], 1, ["missing field 'text'"]),
        ([{"_id": "d1", "text": ["a"]}], 1, ["field 'text' must be a string", "list"]),
        ([{"_id": "d1", "title": 3, "text": "a"}], 1, ["field 'title' must be a string"]),
        ([{"_id": "  ", "text": "a"}], 1, ["empty document id"]),
        ([{"_id": "d1", "text": "a"}, "", {"_id": "d1", "text": "b"}], 3,
         ["duplicate document id 'd1'"]),
        ([{"_id": "d1", "text": "a"}, {"_id": "d2", "title": " ", "text": "  "}], 2,
         ["document 'd2' has empty title and text"]),
    ],
)
def test_load_corpus_jsonl_errors(tmp_path, lines, line, words):
    p = write(tmp_path / "corpus.jsonl", jl(*lines))
    with raises_data_error(p, line, *words):
        load_corpus_jsonl(p)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_load_corpus_jsonl_empty_file(tmp_path, text):
    p = write(tmp_path / "corpus.jsonl", text)
    with raises_data_error(p, None, "no documents"):
        load_corpus_jsonl(p)


# --------------------------------------------------------------------------- BEIR queries


def test_load_queries_jsonl_good(tmp_path):
    p = write(tmp_path / "queries.jsonl",
              jl({"_id": "q2", "text": "b", "metadata": {}}, {"_id": "q1", "text": "a"}))
    q = load_queries_jsonl(p)
    assert q.texts == {"q2": "b", "q1": "a"} and q.ids() == ["q2", "q1"] and len(q) == 2


@pytest.mark.parametrize(
    "lines, line, words",
    [
        ([{"_id": "q1", "text": "a"}, "", "", "{oops}"], 4, ["malformed JSON"]),
        (["42"], 1, ["expected a JSON object", "int"]),
        ([{"text": "a"}], 1, ["missing field '_id'"]),
        ([{"_id": "q1"}], 1, ["missing field 'text'"]),
        ([{"_id": "q1", "text": 1.5}], 1, ["field 'text' must be a string", "float"]),
        ([{"_id": "", "text": "a"}], 1, ["empty query id"]),
        ([{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}], 2,
         ["duplicate query id 'q1'"]),
        ([{"_id": "q1", "text": "a"}, {"_id": "q2", "text": " \t"}], 2,
         ["query 'q2' has empty text"]),
    ],
)
def test_load_queries_jsonl_errors(tmp_path, lines, line, words):
    p = write(tmp_path / "queries.jsonl", jl(*lines))
    with raises_data_error(p, line, *words):
        load_queries_jsonl(p)


def test_load_queries_jsonl_empty_file(tmp_path):
    p = write(tmp_path / "queries.jsonl", "\n")
    with raises_data_error(p, None, "no queries"):
        load_queries_jsonl(p)


# --------------------------------------------------------------------------- BEIR qrels


def test_load_qrels_tsv_skips_header_and_parses_grades(tmp_path):
    p = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n\nq1\td2\t0\nq2\td1\t2.0\n")
    assert load_qrels_tsv(p) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}}


def test_load_qrels_tsv_without_header(tmp_path):
    p = write(tmp_path / "test.tsv", "q1\td1\t1\n")
    assert load_qrels_tsv(p) == {"q1": {"d1": 1}}


def test_load_qrels_tsv_header_only_on_first_line(tmp_path):
    p = write(tmp_path / "test.tsv", "q1\td1\t1\nquery-id\tcorpus-id\tscore\n")
    with raises_data_error(p, 2, "relevance 'score' is not a number"):
        load_qrels_tsv(p)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, ["expected 3 columns, found 2"]),
        ("q1\td1\t1\nq1\td2\t1\textra\n", 2, ["expected 3 columns, found 4"]),
        ("q1 d1 1\n", 1, ["expected 3 columns, found 1"]),
        ("q1\td1\thigh\n", 1, ["relevance 'high' is not a number"]),
        ("q1\td1\t1\n\nq1\td2\t0.5\n", 3, ["relevance '0.5' is not an integer grade"]),
        ("q1\td1\t1\nq2\td1\t1\nq1\td1\t2\n", 3,
         ["duplicate judgement", "query 'q1'", "document 'd1'"]),
        ("q1\t\t1\n", 1, ["empty query or document id"]),
    ],
)
def test_load_qrels_tsv_errors(tmp_path, text, line, words):
    p = write(tmp_path / "test.tsv", text)
    with raises_data_error(p, line, *words):
        load_qrels_tsv(p)


@pytest.mark.parametrize("text", ["", "query-id\tcorpus-id\tscore\n"])
def test_load_qrels_tsv_empty(tmp_path, text):
    p = write(tmp_path / "test.tsv", text)
    with raises_data_error(p, None, "no judgements"):
        load_qrels_tsv(p)


# --------------------------------------------------------------------------- BEIR dataset


def test_load_beir_restricts_queries_to_judged_and_records_sources(tiny_ds):
    root = tiny_ds
    ds = load_beir(root, "test")
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.split) == ("tiny", "test")
    assert len(ds.corpus) == 3
    assert ds.queries.texts == {"q1": "tumor growth", "q2": "blood pressure"}  # q3 unjudged
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert ds.sources == {
        "corpus": str(root / "corpus.jsonl"),
        "queries": str(root / "queries.jsonl"),
        "qrels": str(root / "qrels" / "test.tsv"),
    }
    assert ds.report.ok and ds.report.lines() == []
    assert load_beir(root, "test", name="other").name == "other"


def test_load_beir_missing_split_lists_available_splits(tmp_path):
    root = tiny_beir(tmp_path / "tiny", qrels={"test": "q1\td1\t1\n", "dev": "q2\td2\t1\n"})
    assert beir_splits(root) == ["dev", "test"]
    with pytest.raises(NotFoundError) as ei:
        load_beir(root, "train")
    msg = str(ei.value)
    assert str(root / "qrels" / "train.tsv") in msg
    assert "'train'" in msg and "dev, test" in msg


def test_load_beir_missing_split_without_qrels_dir(tmp_path):
    write(tmp_path / "x" / "corpus.jsonl", jl(*DOCS))
    assert beir_splits(tmp_path / "x") == []
    with pytest.raises(NotFoundError, match="splits here: none"):
        load_beir(tmp_path / "x", "test")


def test_load_beir_missing_corpus_file(tiny_ds):
    root = tiny_ds
    (root / "corpus.jsonl").unlink()
    with pytest.raises(NotFoundError, match="corpus.jsonl: file not found"):
        load_beir(root, "test")


def test_load_beir_reports_qrels_ids_absent_from_corpus_and_queries(tmp_path):
    qrels = ("q1\td1\t1\nq1\tdX\t1\nq2\tdY\t0\nq9\td2\t1\nq8\tdZ\t1\n")
    root = tiny_beir(tmp_path / "tiny", qrels={"test": qrels})
    ds = load_beir(root, "test")  # not an error
    rep = ds.report
    assert not rep.ok
    assert rep.qrels_docs_missing == [("q1", "dX"), ("q2", "dY"), ("q8", "dZ")]
    assert rep.qrels_queries_missing == ["q9", "q8"]
    lines = rep.lines()
    assert len(lines) == 2
    assert lines[0].startswith("3 qrels judgements name documents absent from the corpus")
    assert "q1->dX, q2->dY, q8->dZ" in lines[0]
    assert lines[1].startswith("2 qrels queries are absent from the queries file")
    assert "q9, q8" in lines[1]
    # queries restricted to judged queries that exist
    assert ds.queries.ids() == ["q1", "q2"]
    # examples are capped, the count is not
    short = rep.lines(examples=1)
    assert short[0].startswith("3 ") and "(e.g. q1->dX)" in short[0]
    assert short[1].startswith("2 ") and "(e.g. q9)" in short[1]


def test_validation_report_and_cross_check_directly():
    corpus = Corpus({"d1": Document("a")})
    queries = Queries({"q1": "x"})
    assert cross_check(corpus, queries, {"q1": {"d1": 1}}).ok
    rep = cross_check(corpus, queries, {"q1": {"d2": 1}, "q2": {"d1": 0}})
    assert rep.qrels_docs_missing == [("q1", "d2")] and rep.qrels_queries_missing == ["q2"]
    assert ValidationReport().ok and ValidationReport().lines() == []


# --------------------------------------------------------------------------- types / fingerprints


def test_document_joined():
    assert Document("body", "Title").joined() == "Title body"
    assert Document("body", "Title").joined("\n") == "Title\nbody"
    assert Document("body").joined() == "body"


def test_corpus_fingerprint_changes_with_one_text():
    a = Corpus({"d1": Document("alpha", "T"), "d2": Document("beta")})
    b = Corpus({"d1": Document("alpha", "T"), "d2": Document("beta")})
    c = Corpus({"d1": Document("alpha", "T"), "d2": Document("beta!")})
    d = Corpus({"d2": Document("beta"), "d1": Document("alpha", "T")})  # order matters
    e = Corpus({"d1": Document("T alpha", ""), "d2": Document("beta")})  # title vs text
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint, e.fingerprint}) == 4
    assert len(a.fingerprint) == 64


def test_queries_and_qrels_fingerprints():
    assert Queries({"q1": "a"}).fingerprint != Queries({"q1": "b"}).fingerprint
    # qrels fingerprint does not depend on insertion order but does on grades
    assert qrels_fingerprint({"q1": {"a": 1, "b": 0}, "q2": {"c": 1}}) == \
        qrels_fingerprint({"q2": {"c": 1}, "q1": {"b": 0, "a": 1}})
    assert qrels_fingerprint({"q1": {"a": 1}}) != qrels_fingerprint({"q1": {"a": 2}})


def test_dataset_protocol_keys_and_values(tiny_ds):
    ds = load_beir(tiny_ds, "test")
    p = ds.protocol()
    assert set(p) == {
        "dataset", "split", "sources", "n_docs", "n_queries", "n_judgements",
        "corpus_sha256", "queries_sha256", "qrels_sha256",
    }
    assert (p["dataset"], p["split"], p["n_docs"], p["n_queries"], p["n_judgements"]) == \
        ("tiny", "test", 3, 2, 2)
    assert p["corpus_sha256"] == ds.corpus.fingerprint
    assert p["qrels_sha256"] == qrels_fingerprint(ds.qrels)
    json.dumps(p)  # serialisable for manifests


def test_protocol_changes_when_a_document_changes(tmp_path):
    a = load_beir(tiny_beir(tmp_path / "a"), "test").protocol()
    root = tiny_beir(tmp_path / "b")
    docs = [dict(d) for d in DOCS]
    docs[2]["text"] = "virus immune responses"
    write(root / "corpus.jsonl", jl(*docs))
    b = load_beir(root, "test").protocol()
    assert a["corpus_sha256"] != b["corpus_sha256"]
    assert a["queries_sha256"] == b["queries_sha256"] and a["qrels_sha256"] == b["qrels_sha256"]


# --------------------------------------------------------------------------- TREC topics


def test_load_topics_tsv(tmp_path):
    p = write(tmp_path / "q.tsv", "101\tfirst query\n\n102\tsecond query\n")
    assert load_topics(p).texts == {"101": "first query", "102": "second query"}


def test_load_topics_sgml(tmp_path):
    p = write(tmp_path / "topics.txt", (
        "<top>\n"
        "<num> Number: 301\n"
        "<title> International Organized Crime\n"
        "\n<desc> Description:\nIdentify organizations.\n"
        "</top>\n\n"
        "<TOP>\n<num>302\n<title>Topic: Poliomyelitis\n   and Post-Polio\n"
        "<narr> Narrative: stuff\n</TOP>\n"
    ))
    q = load_topics(p)
    assert q.texts == {"301": "International Organized Crime",
                       "302": "Poliomyelitis and Post-Polio"}


def test_load_topics_sgml_with_closing_num_tag(tmp_path):
    """``<num>301</num>`` must give id '301' (``</title>`` is already handled that way).

    Currently fails: the ``<num>`` pattern takes ``\\S+``, so the id becomes '301</num>'.
    """
    p = write(tmp_path / "topics.xml",
              "<top>\n<num>301</num>\n<title>oil spills</title>\n</top>\n")
    assert load_topics(p).texts == {"301": "oil spills"}


def test_load_topics_sgml_errors(tmp_path):
    p = write(tmp_path / "t.txt",
              "<top>\n<num> 1\n<title> a\n</top>\n\n<top>\n<num> 2\n<desc> no title\n</top>\n")
    with raises_data_error(p, 6, "topic without <num> or <title>"):
        load_topics(p)
    p = write(tmp_path / "t2.txt", "<top>\n<num> 1\n<title> a\n</top>\n<top><num> 1\n<title> b\n</top>\n")
    with raises_data_error(p, 5, "duplicate query id '1'"):
        load_topics(p)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("1\ta\n1\tb\n", 2, ["duplicate query id '1'"]),
        ("1\ta\n2\t  \n", 2, ["query '2' has empty text"]),
        ("1\ta\n2 b\n", 2, ["expected 2 columns, found 1"]),
    ],
)
def test_load_topics_tsv_errors(tmp_path, text, line, words):
    p = write(tmp_path / "q.tsv", text)
    with raises_data_error(p, line, *words):
        load_topics(p)


def test_load_topics_empty_and_missing(tmp_path):
    p = write(tmp_path / "q.tsv", "\n")
    with raises_data_error(p, None, "no topics"):
        load_topics(p)
    with pytest.raises(NotFoundError, match="file not found"):
        load_topics(tmp_path / "none.tsv")


# --------------------------------------------------------------------------- TREC corpus / qrels


def test_load_corpus_tsv_keeps_tabs_in_text(tmp_path):
    p = write(tmp_path / "corpus.tsv", "d1\tcol a\tcol b\n\nd2\tplain\r\n")
    c = load_corpus_tsv(p)
    assert c.docs == {"d1": Document("col a\tcol b"), "d2": Document("plain")}


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("d1\ta\nd2 no tab\n", 2, ["expected 'docid<TAB>text'"]),
        ("d1\ta\n\nd1\tb\n", 3, ["duplicate document id 'd1'"]),
        ("d1\ta\nd2\t \n", 2, ["document 'd2' has empty text"]),
    ],
)
def test_load_corpus_tsv_errors(tmp_path, text, line, words):
    p = write(tmp_path / "corpus.tsv", text)
    with raises_data_error(p, line, *words):
        load_corpus_tsv(p)


def test_load_corpus_tsv_empty_and_missing(tmp_path):
    p = write(tmp_path / "corpus.tsv", "")
    with raises_data_error(p, None, "no documents"):
        load_corpus_tsv(p)
    with pytest.raises(NotFoundError):
        load_corpus_tsv(tmp_path / "none.tsv")


def test_load_trec_qrels(tmp_path):
    p = write(tmp_path / "qrels.txt", "q1 0 d1 2\nq1\tQ0\td2\t0\n\nq2 0 d1 1.0\n")
    assert load_trec_qrels(p) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("q1 0 d1 1\nq1 d2 1\n", 2, ["expected 4 columns, found 3"]),
        ("q1 0 d1 1 x\n", 1, ["expected 4 columns, found 5"]),
        ("q1 0 d1 yes\n", 1, ["relevance 'yes' is not a number"]),
        ("q1 0 d1 0.5\n", 1, ["relevance '0.5' is not an integer grade"]),
        ("q1 0 d1 1\n\nq1 0 d1 1\n", 3, ["duplicate judgement", "'q1'", "'d1'"]),
    ],
)
def test_load_trec_qrels_errors(tmp_path, text, line, words):
    p = write(tmp_path / "qrels.txt", text)
    with raises_data_error(p, line, *words):
        load_trec_qrels(p)


def test_load_trec_qrels_empty(tmp_path):
    p = write(tmp_path / "qrels.txt", "\n \n")
    with raises_data_error(p, None, "no judgements"):
        load_trec_qrels(p)


# --------------------------------------------------------------------------- TREC runs


def test_sorted_hits_descending_score_ties_by_docid():
    assert sorted_hits({"c": 1.0, "b": 2.0, "a": 1.0, "z": 2.0}) == [
        ("b", 2.0), ("z", 2.0), ("a", 1.0), ("c", 1.0)]


def test_write_trec_run_ranks_and_round_trip(tmp_path):
    run = {"q2": {"dc": 0.5, "db": 1.25, "da": 0.5}, "q1": {"x": -1.0, "y": 3.0}}
    out = tmp_path / "sub" / "run.trec"
    write_trec_run(run, out, tag="bm25")
    lines = out.read_text().splitlines()
    assert lines == [
        "q2 Q0 db 1 1.25 bm25",  # shortest exact repr: scores survive the round trip
        "q2 Q0 da 2 0.5 bm25",
        "q2 Q0 dc 3 0.5 bm25",
        "q1 Q0 y 1 3.0 bm25",
        "q1 Q0 x 2 -1.0 bm25",
    ]
    assert load_trec_run(out) == run
    assert [p.name for p in out.parent.iterdir()] == ["run.trec"]  # no temp file left
    assert format_trec_run(run, "t").endswith(" t\n")
    awkward = {"q": {"a": 0.1 + 0.2, "b": 1 / 3}}
    write_trec_run(awkward, out, tag="t")
    assert load_trec_run(out) == awkward


def test_load_trec_run_parses_whitespace_and_ignores_rank(tmp_path):
    p = write(tmp_path / "r.trec", "q1 Q0 d1 5 0.1 t\n\nq1\tQ0\td2\t1\t0.9\tt\nq2 Q0 d1 1 7 t\n")
    assert load_trec_run(p) == {"q1": {"d1": 0.1, "d2": 0.9}, "q2": {"d1": 7.0}}


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4 t\nq1 Q0 d1 3 0.3 t\n", 3,
         ["document 'd1' listed twice for query 'q1'"]),
        ("q1 Q0 d1 1 high t\n", 1, ["score 'high' is not a number"]),
        ("q1 Q0 d1 1 0.5\n", 1, ["expected 6 columns, found 5"]),
    ],
)
def test_load_trec_run_errors(tmp_path, text, line, words):
    p = write(tmp_path / "r.trec", text)
    with raises_data_error(p, line, *words):
        load_trec_run(p)


def test_same_doc_under_two_queries_is_fine(tmp_path):
    p = write(tmp_path / "r.trec", "q1 Q0 d1 1 0.5 t\nq2 Q0 d1 1 0.5 t\n")
    assert load_trec_run(p) == {"q1": {"d1": 0.5}, "q2": {"d1": 0.5}}


# --------------------------------------------------------------------------- TREC directory


def test_load_trec_dir(tmp_path):
    root = make_trec(tmp_path / "nov")
    ds = load_trec_dir(root)
    assert (ds.name, ds.split, len(ds.corpus)) == ("nov", "test", 2)
    assert ds.queries.texts == {"q1": "tumor growth", "q2": "blood pressure"}
    assert ds.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1, "d1": 0}}
    assert ds.sources["qrels"] == str(root / "qrels.txt")
    assert ds.report.ok


def test_load_trec_dir_with_sgml_topics_and_report(tmp_path):
    root = make_trec(tmp_path / "nov")
    write(root / "queries.tsv", "<top>\n<num> q1\n<title> tumor growth\n</top>\n")
    write(root / "qrels.txt", "q1 0 d1 1\nq1 0 d9 1\nq7 0 d2 1\n")
    ds = load_trec_dir(root, name="x", split="dev")
    assert (ds.name, ds.split) == ("x", "dev")
    assert ds.queries.texts == {"q1": "tumor growth"}
    assert ds.report.qrels_docs_missing == [("q1", "d9")]
    assert ds.report.qrels_queries_missing == ["q7"]
    assert len(ds.report.lines()) == 2


# --------------------------------------------------------------------------- registry


@pytest.fixture()
def no_net(monkeypatch):
    """Offline, and the download paths fail loudly if they are ever reached."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def boom(*a, **k):
        raise AssertionError("network path reached")

    monkeypatch.setattr(reg_mod, "download_beir_zip", boom)
    return monkeypatch


def test_registry_entries_parse():
    reg = registry()
    assert {"scifact", "nfcorpus", "fiqa", "trec-covid", "noveleval"} <= set(reg)
    sf = reg["scifact"]
    assert isinstance(sf, DatasetSpec)
    assert (sf.format, sf.dir, set(sf.splits)) == ("beir", "scifact", {"train", "test"})
    assert {reg[n].format for n in ("scifact", "nfcorpus", "fiqa", "trec-covid")} == {"beir"}
    assert reg["noveleval"].format == "trec"


def test_load_dataset_from_beir_directory(tmp_path, no_net):
    root = tiny_beir(tmp_path / "mybeir", qrels={"dev": "q1\td1\t1\n"})
    ds = load_dataset(str(root), "dev")
    assert (ds.name, ds.split, len(ds.corpus), ds.queries.ids()) == ("mybeir", "dev", 3, ["q1"])
    with pytest.raises(NotFoundError, match="splits here: dev"):
        load_dataset(str(root), "test")


def test_load_dataset_from_trec_directory(tmp_path, no_net):
    root = make_trec(tmp_path / "mytrec")
    ds = load_dataset(str(root))
    assert (ds.name, ds.split, len(ds.corpus), len(ds.qrels)) == ("mytrec", "test", 2, 2)
    assert ds.sources["corpus"] == str(root / "corpus.tsv")


def test_load_dataset_directory_of_unknown_layout(tmp_path, no_net):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="not a dataset directory"):
        load_dataset(str(tmp_path / "empty"))


def test_load_dataset_registered_name_from_data_home(tmp_path, no_net):
    home = tmp_path / "home"
    tiny_beir(home / "scifact", qrels={"test": "q1\td1\t1\n", "train": "q2\td2\t1\nq1\td3\t0\n"})
    no_net.setenv("RKD_DATA_HOME", str(home))
    ds = load_dataset("scifact", "test")
    assert (ds.name, ds.split, ds.queries.ids()) == ("scifact", "test", ["q1"])
    assert ds.sources["corpus"] == str((home / "scifact" / "corpus.jsonl").resolve())
    tr = load_dataset("scifact", "train")
    assert tr.queries.ids() == ["q2", "q1"] and sum(map(len, tr.qrels.values())) == 2
    d = describe(registry()["scifact"])
    assert d["local"] == str((home / "scifact").resolve()) and d["splits"] == ["test", "train"]


def test_load_dataset_offline_and_missing_names_where_it_looked(tmp_path, no_net):
    home = tmp_path / "empty_home"
    home.mkdir()
    no_net.setenv("RKD_DATA_HOME", str(home))
    with pytest.raises(NotFoundError) as ei:
        load_dataset("scifact", "test")
    msg = str(ei.value)
    assert "not found offline" in msg
    assert str((home / "scifact").resolve()) in msg
    assert "RKD_DATA_HOME" in msg
    assert describe(registry()["scifact"])["local"] is None


def test_load_dataset_rkd_offline_also_counts(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RKD_OFFLINE", "true")
    monkeypatch.setenv("RKD_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(reg_mod, "download_beir_zip",
                        lambda *a, **k: pytest.fail("download attempted while offline"))
    with pytest.raises(NotFoundError, match="not found offline"):
        load_dataset("nfcorpus", "dev")


def test_load_dataset_online_failures_are_collected(tmp_path, monkeypatch):
    """Not offline, no local copy: both sources are tried (stubbed) and both named."""
    from retrieval_kd.data import irds

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RKD_OFFLINE", raising=False)
    monkeypatch.setenv("RKD_DATA_HOME", str(tmp_path))

    def no_zip(spec, dest, timeout=60.0):
        raise OSError("unreachable")

    def no_irds(dataset_id, name=None, split="test"):
        raise RuntimeError("no network")

    monkeypatch.setattr(reg_mod, "download_beir_zip", no_zip)
    monkeypatch.setattr(irds, "load_ir_datasets", no_irds)
    with pytest.raises(NotFoundError) as ei:
        load_dataset("scifact", "test")
    msg = str(ei.value)
    assert str((tmp_path / "scifact").resolve()) in msg
    assert "unreachable" in msg and "beir/scifact/test" in msg and "RuntimeError" in msg


def test_load_dataset_unknown_name(tmp_path, no_net):
    with pytest.raises(NotFoundError) as ei:
        load_dataset("no-such-dataset")
    msg = str(ei.value)
    assert "unknown dataset 'no-such-dataset'" in msg and "scifact" in msg
    with pytest.raises(NotFoundError, match="unknown dataset"):
        load_dataset(str(tmp_path / "missing_dir"))


def test_load_dataset_unknown_split(tmp_path, no_net):
    no_net.setenv("RKD_DATA_HOME", str(tmp_path))
    with pytest.raises(NotFoundError) as ei:
        load_dataset("scifact", "dev")
    assert "no split 'dev'" in str(ei.value) and "train" in str(ei.value)


# --------------------------------------------------------------------------- BEIR zip (file:// URL, no network)


def _beir_zip(tmp_path: Path) -> Path:
    src = tiny_beir(tmp_path / "src" / "scifact")
    archive = tmp_path / "scifact.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in src.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(src.parent))
    return archive


def test_download_beir_zip_unpacks_md5_checked(tmp_path):
    archive = _beir_zip(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = DatasetSpec(name="z", format="beir", dir="z", splits=["test"],
                       url=archive.as_uri(), md5=md5)
    dest = tmp_path / "home" / "z"
    assert download_beir_zip(spec, dest) == dest
    assert (dest / "corpus.jsonl").is_file() and (dest / "qrels" / "test.tsv").is_file()
    assert [p.name for p in dest.parent.iterdir()] == ["z"]  # temp download dir removed
    assert len(load_beir(dest, "test").corpus) == 3


def test_download_beir_zip_bad_md5_leaves_nothing(tmp_path):
    archive = _beir_zip(tmp_path)
    spec = DatasetSpec(name="z", format="beir", dir="z", splits=["test"],
                       url=archive.as_uri(), md5="0" * 32)
    dest = tmp_path / "home" / "z"
    with pytest.raises(IntegrityError, match="md5"):
        download_beir_zip(spec, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


# --------------------------------------------------------------------------- real SciFact copy


@pytest.fixture()
def scifact_home(scifact_dir, monkeypatch):
    """The data home holding the real SciFact copy (a skip naming what is missing when it is not here)."""
    shared_data = scifact_dir.parent
    monkeypatch.setenv("RKD_DATA_HOME", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return shared_data


@pytest.mark.shared_data
@pytest.mark.parametrize("split, n_q, n_j", [("test", 300, 339), ("train", 809, 919)])
def test_real_scifact_loads(scifact_home, split, n_q, n_j):
    ds = load_dataset("scifact", split)
    p = ds.protocol()
    assert (p["n_docs"], p["n_queries"], p["n_judgements"]) == (5183, n_q, n_j)
    assert ds.report.ok, ds.report.lines()
    assert ds.sources["corpus"] == str(scifact_home.resolve() / "scifact" / "corpus.jsonl")
