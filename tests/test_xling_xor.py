"""XOR-TyDi XOR-Retrieve: the jsonl loader, user corpora, and R@Nkt as the official
eval_xor_retrieve.py computes it, on the hand-made fixture in tests/fixtures/xortydi-tiny/.

Token positions in the fixture (whitespace tokens):
  d5 "Filler text about "nothing" in particular here ." = 8 tokens; d1 "Tokyo is the capital of
  Japan ." = 7; d2 "The Han River flows through Seoul , ..." has Seoul as its 6th token; d4
  "Mount Fuji is 3,776 metres high ." has "3,776 metres" as tokens 4-5.
Ranked contexts (predictions.json): -101: d5, d1 -> Tokyo is token 9; -102: d1, d2 -> Seoul is
token 13; -103: d4, d5 -> no Cairo; -104: d4, d1 -> "3,776 metres" ends at token 5; -105:
answer "yes" only -> not counted; -106 (ko): no prediction -> a miss (or skipped).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from retrieval_kd.errors import DataError, NotFoundError, RkdError
from retrieval_kd.xling import xor_tydi as xor

FIX = Path(__file__).parent / "fixtures" / "xortydi-tiny"
QFILE = FIX / "xor_dev_retrieve_eng_span.jsonl"
RUN = {  # the same rankings as predictions.json, as scores
    "-101": {"d5": 2.0, "d1": 1.0},
    "-102": {"d1": 0.9, "d2": 0.8},
    "-103": {"d4": 3.0, "d5": 1.0},
    "-104": {"d4": 5.0, "d1": 4.0},
    "-105": {"d2": 1.0},
}


@pytest.fixture(scope="module")
def questions():
    return xor.load_xor_retrieve(QFILE)


@pytest.fixture(scope="module")
def contexts():
    return xor.load_xor_predictions(FIX / "predictions.json")


def test_questions_load_with_fields(questions):
    assert list(questions) == ["-101", "-102", "-103", "-104", "-105", "-106"]
    q = questions["-104"]
    assert q.lang == "ja" and q.answers == ("3,776 metres", "3776 m")
    assert xor.xor_queries(questions, lang="ko").ids() == ["-102", "-105", "-106"]
    assert len(xor.xor_queries(questions)) == 6


@pytest.mark.parametrize("n, per_lang, macro, micro", [
    # ja: -101 (Tokyo @9), -104 (@5); ko: -102 (Seoul @13), -106 (missing); ar: -103 (never)
    (4, {"ja": (0, 2), "ko": (0, 2), "ar": (0, 1)}, 0.0, 0.0),
    (5, {"ja": (1, 2), "ko": (0, 2), "ar": (0, 1)}, (0.5 + 0 + 0) / 3, 1 / 5),
    (8, {"ja": (1, 2), "ko": (0, 2), "ar": (0, 1)}, (0.5 + 0 + 0) / 3, 1 / 5),
    (9, {"ja": (2, 2), "ko": (0, 2), "ar": (0, 1)}, (1 + 0 + 0) / 3, 2 / 5),
    (12, {"ja": (2, 2), "ko": (0, 2), "ar": (0, 1)}, (1 + 0 + 0) / 3, 2 / 5),
    (13, {"ja": (2, 2), "ko": (1, 2), "ar": (0, 1)}, (1 + 0.5 + 0) / 3, 3 / 5),
    (2000, {"ja": (2, 2), "ko": (1, 2), "ar": (0, 1)}, (1 + 0.5 + 0) / 3, 3 / 5),
])
def test_recall_at_tokens_hand_computed(questions, contexts, n, per_lang, macro, micro):
    r = xor.xor_recall_at_tokens(questions, contexts, n, tokenizer="whitespace")
    assert {k: (v["hit"], v["count"]) for k, v in r.per_lang.items()} == per_lang
    assert r.macro == pytest.approx(macro) and r.micro == pytest.approx(micro)
    assert r.skipped_no_span_answer == 1 and r.missing_from_run == 1


def test_missing_skip_reproduces_the_official_script(questions, contexts):
    r = xor.xor_recall_at_tokens(questions, contexts, 13, tokenizer="whitespace", missing="skip")
    assert r.per_lang["ko"] == {"count": 1, "hit": 1, "recall": 1.0}
    assert r.macro == pytest.approx((1 + 1 + 0) / 3) and r.micro == pytest.approx(3 / 4)


def test_r2kt_r5kt_token_boundaries():
    qs = {q: xor.XorQuestion(q, "?", lang, ("ANSWER",)) for q, lang in
          [("at2000", "fi"), ("at2001", "fi"), ("at5000", "te"), ("at5001", "te")]}
    ctx = {
        "at2000": ["w " * 1999, "ANSWER tail"],        # token 2000
        "at2001": ["w " * 2000, "ANSWER"],             # token 2001
        "at5000": ["w " * 4000, "w " * 999 + "ANSWER"],  # token 5000, inside the 2nd passage
        "at5001": ["w " * 5000, "ANSWER"],             # token 5001
    }
    res = xor.evaluate_xor_retrieve(qs, ctx, tokenizer="whitespace")
    assert set(res) == {"R@2kt", "R@5kt"}
    assert res["R@2kt"].per_lang == {"fi": {"count": 2, "hit": 1, "recall": 0.5},
                                     "te": {"count": 2, "hit": 0, "recall": 0.0}}
    assert res["R@5kt"].per_lang == {"fi": {"count": 2, "hit": 2, "recall": 1.0},
                                     "te": {"count": 2, "hit": 1, "recall": 0.5}}
    assert res["R@2kt"].macro == pytest.approx(0.25) and res["R@5kt"].macro == pytest.approx(0.75)
    d = res["R@5kt"].as_dict()
    assert d["metric"] == "R@5kt" and d["max_tokens"] == 5000 and d["tokenizer"] == "whitespace"


def test_answer_matches_the_space_joined_token_string():
    ws = str.split
    # a multi-token answer matches across passages; a substring of a token matches (official)
    assert xor.answer_in_first_tokens(["a b capital", "of Japan"], ["capital of Japan"], 10, ws)
    assert xor.answer_in_first_tokens(["Tokyoites live here"], ["Tokyo"], 10, ws)
    assert not xor.answer_in_first_tokens(["tokyo"], ["Tokyo"], 10, ws)  # case-sensitive
    # whitespace runs collapse to one space once tokenized and joined
    assert xor.answer_in_first_tokens(["3,776\n  metres"], ["3,776 metres"], 10, ws)


def test_custom_tokenizer_changes_what_matches(questions, contexts):
    punct = re.compile(r"\w+|[^\w\s]")  # splits "3,776" into "3 , 776"

    def split_punct(t: str) -> list[str]:
        return punct.findall(t)

    r = xor.xor_recall_at_tokens(questions, contexts, 5000, tokenizer=split_punct)
    assert r.per_lang["ja"]["hit"] == 1 and r.tokenizer == "split_punct"  # -104 no longer matches


def test_nltk_tokenizer_when_available():
    try:
        from nltk.tokenize import word_tokenize

        word_tokenize("A test.")
    except (ImportError, LookupError):
        with pytest.raises(RkdError, match="whitespace"):
            xor.xor_recall_at_tokens(xor.load_xor_retrieve(QFILE), {}, 2000)  # the default is the official nltk tokenizer
        return
    qs = {"q": xor.XorQuestion("q", "?", "ja", ("Tokyo's",))}
    ctx = {"q": ["Tokyo's parks."]}
    assert xor.xor_recall_at_tokens(qs, ctx, 100, tokenizer="whitespace").micro == 1.0
    assert xor.xor_recall_at_tokens(qs, ctx, 100).micro == 0.0  # "Tokyo 's" after word_tokenize


def test_run_to_contexts_with_tsv_and_jsonl_corpora(questions, contexts):
    tsv, jsonl = xor.load_passages(FIX / "passages.tsv"), xor.load_passages(FIX / "passages.jsonl")
    assert tsv.docs == jsonl.docs and len(tsv) == 5
    assert tsv.docs["d5"].text == 'Filler text about "nothing" in particular here .'  # csv quoting
    assert tsv.docs["d2"].title == "Han River"
    got = xor.contexts_from_run(RUN, tsv)
    assert got == contexts
    tie = xor.contexts_from_run({"q": {"d4": 1.0, "d1": 1.0, "d3": 2.0}}, tsv, depth=2, with_title=True)
    assert tie["q"] == ["Cairo Cairo is the capital of Egypt .", "Tokyo Tokyo is the capital of Japan ."]
    with pytest.raises(NotFoundError, match="'d9'"):
        xor.contexts_from_run({"q": {"d9": 1.0}}, tsv)
    r = xor.xor_recall_at_tokens(questions, got, 13, tokenizer="whitespace")
    assert r.macro == pytest.approx(0.5)


# ----------------------------------------------------------------------------- bad input


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


GOOD = json.dumps({"id": "1", "question": "q?", "answers": ["a"], "lang": "ja"})


@pytest.mark.parametrize("bad, problem", [
    ('{"id": "2", "question": "q?", "answers": ["a"]}', "missing field 'lang'"),
    ('{"id": "2", "question": "q?", "lang": "ja"}', "missing field 'answers'"),
    ('{"id": "2", "question": "  ", "answers": ["a"], "lang": "ja"}', "non-empty string"),
    ('{"id": "2", "question": "q?", "answers": "a", "lang": "ja"}', "list of strings"),
    ('{"id": "1", "question": "q?", "answers": ["a"], "lang": "ja"}', "duplicate question id '1'"),
    ('{"id": "2", "question": "q?", "answers": ["a"], "lang": "ja"', "malformed JSON"),
])
def test_bad_question_lines_name_file_and_line(tmp_path, bad, problem):
    p = _write(tmp_path, "xor.jsonl", [GOOD, "", bad])
    with pytest.raises(DataError, match=re.escape(problem)) as e:
        xor.load_xor_retrieve(p)
    assert e.value.path == str(p) and e.value.line == 3


def test_question_only_test_file(tmp_path):
    p = _write(tmp_path, "xor_test.jsonl", ['{"id": 7, "question": "q?", "lang": "te"}'])
    with pytest.raises(DataError, match="missing field 'answers'"):
        xor.load_xor_retrieve(p)
    assert xor.load_xor_retrieve(p, require_answers=False)["7"].answers == ()


@pytest.mark.parametrize("name, lines, line, problem", [
    ("c.tsv", ["id\ttext\ttitle", "d1\tsome text\tT", "d2\tonly\ttoo\tmany"], 3, "found 4"),
    ("c.tsv", ["d1\tsome text\tT", "d1\tagain\tT"], 2, "duplicate passage id 'd1'"),
    ("c.tsv", ["d1\tsome text\tT", "d2\t \tT"], 2, "empty text"),
    ("c.jsonl", ['{"_id": "d1", "text": "x"}', '{"title": "no id", "text": "x"}'], 2, "passage id"),
    ("c.jsonl", ['{"id": 1, "text": "x"}', '{"id": 2, "text": 5}'], 2, "must be strings"),
])
def test_bad_corpus_lines_name_file_and_line(tmp_path, name, lines, line, problem):
    p = _write(tmp_path, name, lines)
    with pytest.raises(DataError, match=re.escape(problem)) as e:
        xor.load_passages(p)
    assert e.value.path == str(p) and e.value.line == line


def test_bad_predictions_and_missing_files(tmp_path):
    p = tmp_path / "pred.json"
    p.write_text('[{"id": "1", "lang": "ja", "ctxs": ["a"]},\n {"id": "2", "ctxs": "a"}]')
    with pytest.raises(DataError, match=r"item \[1\]"):
        xor.load_xor_predictions(p)
    p.write_text('[{"id": "1",\n "ctxs": [}]')
    with pytest.raises(DataError, match="malformed JSON") as e:
        xor.load_xor_predictions(p)
    assert e.value.line == 2
    with pytest.raises(NotFoundError):
        xor.load_passages(tmp_path / "absent.tsv")
    with pytest.raises(NotFoundError):
        xor.load_xor_retrieve(tmp_path / "absent.jsonl")
