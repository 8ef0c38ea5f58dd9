"""Import / export of teacher scores in other tools' formats (retrieval_kd.scores.interop)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from retrieval_kd.data.types import Corpus, Dataset, Document, Queries
from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.scores import interop
from retrieval_kd.scores.interop import FORMATS, export_scores, import_scores
from retrieval_kd.scores.schema import SCHEMA, make_table

AWKWARD = [0.1 + 0.2, -1e-300, 123456.789012345, 1 / 3, 5e-324, -0.0, 1e308, 2.0**-1074 * 3, 7.0]

# (qid, docid, score, label): scores repeat across queries, labels include 2 and 0.
ROWS = [
    ("q1", "d1", AWKWARD[0], 1), ("q1", "d2", AWKWARD[1], 0), ("q1", "d3", AWKWARD[2], None),
    ("q2", "d2", AWKWARD[0], 2), ("q2", "d4", AWKWARD[3], None), ("q2", "d1", AWKWARD[4], None),
    ("q2", "d5", AWKWARD[5], 1),
    ("q3", "d3", AWKWARD[6], 1), ("q3", "d5", AWKWARD[7], None), ("q3", "d6", AWKWARD[8], 0),
]

# Every (format, file name) pair: st-pickle and pylate each come in two layouts.
VARIANTS = [
    ("st-pickle", "scores.pkl"), ("st-pickle", "scores.pkl.gz"), ("margin-mse-tsv", "train.tsv"),
    ("flagembedding-jsonl", "train.jsonl"), ("pylate", "kd.parquet"), ("pylate", "kd.jsonl"),
    ("trec", "run.trec"),
]


def table(rows=ROWS):
    q, d, s, lab = zip(*rows)
    return make_table(list(q), list(d), list(s), labels=list(lab))


def dataset() -> Dataset:
    docs = {
        "d1": Document("tumor cells grow fast", "Tumor"), "d2": Document("blood pressure drug"),
        "d3": Document("virus immune response", "Virus"), "d4": Document("héllo wörld \"quoted\"\ttab"),
        "d5": Document("line\nbreak inside"), "d6": Document("six"), "d7": Document("twin"),
        "d8": Document("twin"),
    }
    queries = {"q1": "tumor growth", "q2": "blood pressure", "q3": "viral infection"}
    return Dataset("tiny", "train", Corpus(docs), Queries(queries), {"q1": {"d1": 1}})


def bits(t) -> dict[tuple[str, str], str]:
    """(qid, docid) -> the score's exact bits (float.hex tells -0.0 from 0.0)."""
    rows = zip(t.column("qid").to_pylist(), t.column("docid").to_pylist(), t.column("score").to_pylist())
    return {(q, d): float(s).hex() for q, d, s in rows}


def positives(t) -> set[tuple[str, str]]:
    rows = zip(t.column("qid").to_pylist(), t.column("docid").to_pylist(), t.column("label").to_pylist())
    return {(q, d) for q, d, lab in rows if lab is not None and lab > 0}


@pytest.mark.parametrize("fmt,name", VARIANTS)
def test_round_trip_keeps_every_score_exactly(tmp_path, fmt, name):
    path = tmp_path / name
    n = export_scores(table(), fmt, path, dataset=dataset())
    back = import_scores(fmt, path, dataset=dataset())
    assert back.schema == SCHEMA
    assert bits(back) == bits(table())
    expected_n = {"margin-mse-tsv": 2 + 2 * 2 + 1 * 2, "flagembedding-jsonl": 3, "pylate": 3}
    assert n == expected_n.get(fmt, len(ROWS))
    assert back.column("rank").null_count == back.num_rows
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


@pytest.mark.parametrize("fmt", ["margin-mse-tsv", "flagembedding-jsonl"])
def test_pair_formats_keep_positives(tmp_path, fmt):
    path = tmp_path / "out"
    export_scores(table(), fmt, path, dataset=dataset())
    back = import_scores(fmt, path, dataset=dataset())
    assert positives(back) == positives(table())
    assert set(back.column("label").to_pylist()) == {1, None}


def test_st_pickle_digit_ids_are_written_as_ints_and_read_as_str(tmp_path):
    t = make_table(["7", "7", "42"], ["100", "0", "100"], [AWKWARD[0], AWKWARD[1], AWKWARD[0]])
    path = tmp_path / "ce-scores.pkl.gz"
    assert export_scores(t, "st-pickle", path) == 3
    with gzip.open(path, "rb") as f:
        raw = pickle.load(f)
    assert raw == {7: {100: AWKWARD[0], 0: AWKWARD[1]}, 42: {100: AWKWARD[0]}}
    assert bits(import_scores("st-pickle", path)) == bits(t)
    # A leading zero would not survive int(): such ids stay strings.
    export_scores(make_table(["007"], ["1"], [1.5]), "st-pickle", tmp_path / "s.pkl")
    assert pickle.loads((tmp_path / "s.pkl").read_bytes()) == {"007": {"1": 1.5}}


def test_st_pickle_reads_msmarco_layout_with_numpy_scores(tmp_path):
    path = tmp_path / "ms.pkl"
    path.write_bytes(pickle.dumps({1185869: {8841662: np.float32(-0.1), 123: 4}, 2: {5: np.float64(0.3)}}))
    t = import_scores("st-pickle", path)
    assert bits(t) == {("1185869", "8841662"): float(np.float32(-0.1)).hex(),
                       ("1185869", "123"): (4.0).hex(), ("2", "5"): (0.3).hex()}


def test_st_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"q": {"d": Evil()}}))
    with pytest.raises(DataError, match="refusing to load"):
        import_scores("st-pickle", path)
    path.write_bytes(pickle.dumps({"q": {"d": "high"}}))
    with pytest.raises(DataError, match="'high' is not a number"):
        import_scores("st-pickle", path)


def test_pylate_layouts(tmp_path):
    export_scores(table(), "pylate", tmp_path / "kd.parquet")
    pt = pq.read_table(tmp_path / "kd.parquet")
    assert pt.column_names == ["query_id", "document_ids", "scores"]
    assert pt.to_pylist()[0] == {"query_id": "q1", "document_ids": ["d1", "d2", "d3"],
                                 "scores": [AWKWARD[0], AWKWARD[1], AWKWARD[2]]}
    export_scores(table(), "pylate", tmp_path / "kd.jsonl")
    first = json.loads((tmp_path / "kd.jsonl").read_text().splitlines()[0])
    assert first == pt.to_pylist()[0]


def test_trec_ranks_by_score_then_docid(tmp_path):
    t = make_table(["q", "q", "q"], ["b", "a", "c"], [1.0, 1.0, 2.5])
    export_scores(t, "trec", tmp_path / "run.trec", tag="ce")
    assert (tmp_path / "run.trec").read_text().splitlines() == [
        "q Q0 c 1 2.5 ce", "q Q0 a 2 1.0 ce", "q Q0 b 3 1.0 ce"]
    with pytest.raises(RkdError, match="separator"):
        export_scores(make_table(["q 1"], ["d"], [1.0]), "trec", tmp_path / "bad.trec")
    assert not (tmp_path / "bad.trec").exists()


def test_flagembedding_record_layout(tmp_path):
    export_scores(table(), "flagembedding-jsonl", tmp_path / "fe.jsonl", dataset=dataset())
    rec = json.loads((tmp_path / "fe.jsonl").read_text().splitlines()[1])
    assert rec == {"query": "blood pressure", "pos": ["blood pressure drug", "line\nbreak inside"],
                   "neg": ["héllo wörld \"quoted\"\ttab", "Tumor tumor cells grow fast"],
                   "pos_scores": [AWKWARD[0], AWKWARD[5]], "neg_scores": [AWKWARD[3], AWKWARD[4]]}


def test_queries_without_positive_are_skipped_and_counted(tmp_path, caplog):
    rows = [*ROWS, ("q4", "d1", 1.0, None), ("q4", "d2", 2.0, 0)]
    with caplog.at_level(logging.WARNING, logger="retrieval_kd.scores.interop"):
        n = export_scores(table(rows), "margin-mse-tsv", tmp_path / "m.tsv")
    assert n == 8 and "skipped 1 of 4 queries" in caplog.text


def test_margin_export_without_labels_is_a_clear_error(tmp_path):
    t = make_table(["q1", "q1"], ["d1", "d2"], [1.0, 0.5])
    with pytest.raises(RkdError, match="needs relevance labels"):
        export_scores(t, "margin-mse-tsv", tmp_path / "m.tsv")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_missing_dataset(tmp_path):
    with pytest.raises(RkdError, match="known formats: " + ", ".join(FORMATS)):
        export_scores(table(), "csv", tmp_path / "x")
    with pytest.raises(RkdError, match="flagembedding-jsonl.*--dataset"):
        export_scores(table(), "flagembedding-jsonl", tmp_path / "x")
    (tmp_path / "x").write_text("{}\n")
    with pytest.raises(RkdError, match="flagembedding-jsonl.*--dataset"):
        import_scores("flagembedding-jsonl", tmp_path / "x")


def test_duplicate_rows_in_table_are_refused(tmp_path):
    t = make_table(["q", "q"], ["d", "d"], [1.0, 2.0])
    with pytest.raises(RkdError, match="twice"):
        export_scores(t, "pylate", tmp_path / "p.jsonl")


def write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def located(exc: pytest.ExceptionInfo, path, line: int | None) -> str:
    assert exc.value.path == str(path) and exc.value.line == line
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(exc.value).startswith(where + ": ")
    return exc.value.problem


def test_bad_json_line_is_located(tmp_path):
    first = {"pylate": {"query_id": "q1", "document_ids": ["d1"], "scores": [0.5]},
             "flagembedding-jsonl": {"query": "tumor growth", "pos": ["six"], "pos_scores": [0.5]}}
    for fmt, rec in first.items():
        p = write(tmp_path, f"{fmt}.jsonl", [json.dumps(rec), "{oops"])
        with pytest.raises(DataError) as e:
            import_scores(fmt, p, dataset=dataset())
        assert "malformed JSON" in located(e, p, 2)


def test_margin_tsv_errors_are_located(tmp_path):
    p = write(tmp_path, "conflict.tsv", ["1.5\t0.5\tq1\td1\td2", "2.0\t0.25\tq2\td1\td2", "1.5\t0.75\tq1\td1\td2"])
    with pytest.raises(DataError) as e:
        import_scores("margin-mse-tsv", p)
    problem = located(e, p, 3)
    assert "'q1', document 'd2'" in problem and "0.75" in problem and "line 1" in problem
    p = write(tmp_path, "cols.tsv", ["1.5\t0.5\tq1\td1\td2", "1.5\t0.5\tq1\td1"])
    with pytest.raises(DataError) as e:
        import_scores("margin-mse-tsv", p)
    assert "expected 5 columns, found 4" in located(e, p, 2)
    p = write(tmp_path, "num.tsv", ["high\t0.5\tq1\td1\td2"])
    with pytest.raises(DataError) as e:
        import_scores("margin-mse-tsv", p)
    assert "'high' is not a number" in located(e, p, 1)
    # Same pair, same score twice (a positive reused across triples) is fine.
    p = write(tmp_path, "ok.tsv", ["1.5\t0.5\tq1\td1\td2", "1.5\t0.25\tq1\td1\td3"])
    assert len(import_scores("margin-mse-tsv", p)) == 3


def test_flagembedding_import_errors_are_located(tmp_path):
    good = {"query": "tumor growth", "pos": ["Tumor tumor cells grow fast"], "neg": [],
            "pos_scores": [1.0], "neg_scores": []}
    cases = [
        ({**good, "neg": ["no such passage"], "neg_scores": [0.5]}, "passage text not found"),
        ({**good, "query": "who knows"}, "query text not found"),
        ({**good, "neg": ["twin"], "neg_scores": [0.5]}, "ambiguous (ids d7, d8)"),
        ({**good, "pos_scores": [1.0, 2.0]}, "'pos' has 1 passages but 'pos_scores' has 2"),
        ({**good, "pos_scores": ["1.0"]}, "is not a number"),
        ({k: v for k, v in good.items() if k != "pos_scores"}, "must be a list of numbers"),
    ]
    for i, (bad, problem) in enumerate(cases):
        p = write(tmp_path, f"fe{i}.jsonl", [json.dumps(good), json.dumps(bad)])
        with pytest.raises(DataError) as e:
            import_scores("flagembedding-jsonl", p, dataset=dataset())
        assert problem in located(e, p, 2)


def test_pylate_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa

    p = tmp_path / "kd.parquet"
    pq.write_table(pa.table({"query_id": ["q1", "q2"], "document_ids": [["d1"], ["d1", "d2"]],
                             "scores": [[1.0], [1.0]]}), p)
    with pytest.raises(DataError) as e:
        import_scores("pylate", p)
    assert located(e, p, None).startswith("row 2: ")
    p.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet"):
        import_scores("pylate", p)


@pytest.mark.parametrize("fmt,name", VARIANTS)
def test_interrupted_export_leaves_no_file(tmp_path, monkeypatch, fmt, name):
    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)  # the writer is artifacts.atomic_open
    with pytest.raises(KeyboardInterrupt):
        export_scores(table(), fmt, tmp_path / name, dataset=dataset())
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_stream_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "train.tsv"
    path.write_text("previous\n")

    def lines(groups):
        for i in range(20_000):  # more than one write chunk reaches the temporary file
            yield f"1.0\t0.5\tq{i}\td1\td2"
        raise RuntimeError("disk full")

    monkeypatch.setattr(interop, "_margin_lines", lines)
    with pytest.raises(RuntimeError, match="disk full"):
        export_scores(table(), "margin-mse-tsv", path)
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.tsv"]
