"""translate_join: teacher scores on English queries joined with translated queries by id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrieval_kd.data.types import Corpus, Document, Queries
from retrieval_kd.scores.schema import make_table
from retrieval_kd.scores.store import ScoreStore, part_name
from retrieval_kd.xling.translate import IdMismatchError, translate_join

STORE = make_table(["q1", "q1", "q2", "q2", "q3"], ["d1", "d2", "d2", "d3", "d1"],
                   [9.5, 1.25, 3.0, -2.0, 0.5], ranks=[1, 2, 1, 2, 1], labels=[1, None, None, 0, None])
DE = Queries({"q1": "Was ist ein Hund?", "q2": "Wo leben Katzen?", "q3": "Wie alt wird ein Pferd?"})
CORPUS = Corpus({"d1": Document("Dogs are mammals.", "Dog"), "d2": Document("Cats live indoors."),
                 "d3": Document("Horses live 30 years.")})


def test_rows_keep_store_order_scores_and_labels():
    t = translate_join(STORE, DE)
    assert t.column_names == ["qid", "query", "docid", "score", "rank", "label"]
    rows = t.to_pylist()
    assert rows[0] == {"qid": "q1", "query": "Was ist ein Hund?", "docid": "d1", "score": 9.5,
                       "rank": 1, "label": 1}
    assert [r["query"] for r in rows] == [DE.texts[q] for q in ("q1", "q1", "q2", "q2", "q3")]
    assert [r["score"] for r in rows] == [9.5, 1.25, 3.0, -2.0, 0.5]
    assert [r["label"] for r in rows] == [1, None, None, 0, None]


def test_passages_attached_from_a_corpus_and_mapping_targets():
    t = translate_join(STORE, dict(DE.texts), corpus=CORPUS)
    assert t.column_names == ["qid", "query", "docid", "passage", "score", "rank", "label"]
    assert t.column("passage").to_pylist()[:2] == ["Dog Dogs are mammals.", "Cats live indoors."]


def test_table_without_optional_columns():
    bare = STORE.select(["qid", "docid", "score"])
    t = translate_join(bare, DE)
    assert t.column("rank").null_count == 5 and t.schema.field("rank").type == pa.int32()


def test_refuses_ids_missing_on_either_side_with_counts_and_examples():
    fewer = Queries({"q1": "Was ist ein Hund?"})
    with pytest.raises(IdMismatchError, match=r"2 scored query ids have no target-language query "
                                              r"\(e\.g\. q2, q3\)"):
        translate_join(STORE, fewer)
    more = Queries({**DE.texts, "q4": "Extra?", "q5": "Noch eine?"})
    with pytest.raises(IdMismatchError) as e:
        translate_join(STORE, more)
    assert "2 target-language queries have no teacher scores (e.g. q4, q5)" in str(e.value)
    both = Queries({"q1": "x", "q9": "y"})
    with pytest.raises(IdMismatchError) as e:
        translate_join(STORE, both)
    assert [(what, ids) for what, ids in e.value.problems] == [
        ("scored query ids have no target-language query", ["q2", "q3"]),
        ("target-language queries have no teacher scores", ["q9"]),
    ]
    with pytest.raises(IdMismatchError, match=r"1 scored passage ids are absent from the corpus \(e\.g\. d3\)"):
        translate_join(STORE, DE, corpus=Corpus({"d1": Document("a"), "d2": Document("b")}))


def test_examples_are_capped():
    qids = [f"q{i}" for i in range(12)]
    t = make_table(qids, ["d"] * 12, [0.0] * 12)
    with pytest.raises(IdMismatchError, match=r"12 scored query ids .*\(e\.g\. q0, q1, q2, q3, q4\)$"):
        translate_join(t, {})


def test_reads_a_score_store_directory(tmp_path: Path):
    scores = tmp_path / "store" / "scores"
    scores.mkdir(parents=True)
    pq.write_table(STORE.slice(0, 3), scores / part_name(0, 3))
    pq.write_table(STORE.slice(3), scores / part_name(3, 5))
    from_path = translate_join(tmp_path / "store", DE)
    assert from_path.equals(translate_join(ScoreStore(tmp_path / "store"), DE))
    assert from_path.equals(translate_join(STORE, DE))


def test_missing_score_column_is_an_error():
    from retrieval_kd.errors import RkdError

    with pytest.raises(RkdError, match="no 'score' column"):
        translate_join(STORE.select(["qid", "docid"]), DE)


@pytest.mark.shared_data
def test_real_xquad_r_english_scores_to_german_queries(shared_dataset):
    root = shared_dataset("xquad-r", "en.json", "de.json")
    from retrieval_kd.xling.xquad_r import load_xquad_r

    en, de = load_xquad_r("en", "en", root=root), load_xquad_r("de", "en", root=root)
    qids = [q for q in en.queries.ids() for _ in range(2)]
    docids = [d for q in en.queries.ids() for d in (next(iter(en.qrels[q])), "en_00_00")]
    store = make_table(qids, docids, [1.0, 0.0] * len(en.queries))
    t = translate_join(store, de, corpus=en)
    assert t.num_rows == 2 * 1190
    row = t.slice(0, 1).to_pylist()[0]
    assert row["query"] == de.queries.texts[row["qid"]] and row["passage"] == en.corpus.docs[row["docid"]].text
