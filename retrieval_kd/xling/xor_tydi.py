"""XOR-TyDi QA, XOR-Retrieve: questions in 7 languages, English Wikipedia passages.

Questions come in the released jsonl format (``xor_{train,dev}_retrieve_eng_span*.jsonl``,
one ``{"id", "question", "answers", "lang"}`` per line; the test file has no ``answers``).
The corpus (English Wikipedia 2019-02-01 in 100-word passages) is not shipped here: a user
supplies it as jsonl (``_id`` or ``id``, ``title``, ``text``) or as DPR's tsv
(``id<TAB>text<TAB>title`` with an optional header, csv quoting as in ``psgs_w100.tsv``).

The metric, R@Nkt, mirrors the official ``evals/eval_xor_retrieve.py`` (AkariAsai/XORQA):
for each question, the retrieved passage texts are tokenized in rank order and
concatenated until at least N tokens are collected; the list is cut to the first N tokens
and joined with single spaces; the question is a hit when any answer string occurs
(case-sensitive substring) in that string. Answers that are exactly ``yes`` or ``no`` are
dropped and a question left without answers is not counted. The score is the hit rate per
language; the official summary is their unweighted (macro) mean. R@2kt: N = 2,000;
R@5kt: N = 5,000. Passage text only, no title, as in the official prediction format.

Tokenization: the official script uses NLTK's ``word_tokenize`` (punctuation split off,
so "Tokyo's" becomes "Tokyo 's"), which is ``tokenizer="nltk"`` here and the default; it
needs ``pip install nltk`` and the ``punkt_tab`` data. ``tokenizer="whitespace"``
(``str.split``) needs nothing but counts fewer, longer tokens and matches more: its
numbers are not comparable with published ones, and the result records which was used.

Where the official script skips a question that is missing from the prediction file, here
it counts as a miss by default (``missing="miss"``, as a query missing from a run scores 0
in :func:`retrieval_kd.eval.metrics.evaluate_run`); ``missing="skip"`` reproduces the script.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Literal

from retrieval_kd.data.readers import Entries, read_jsonl
from retrieval_kd.data.types import Corpus, Document, Queries, Run
from retrieval_kd.errors import DataError, NotFoundError, RkdError
from retrieval_kd.xling._json import load_json, record_id

XOR_LANGS = ("ar", "bn", "fi", "ja", "ko", "ru", "te")
SKIPPED_ANSWERS = ("yes", "no")
Tokenizer = Literal["nltk", "whitespace"] | Callable[[str], list[str]]


@dataclass(frozen=True)
class XorQuestion:
    id: str
    question: str
    lang: str
    answers: tuple[str, ...] = ()


def load_xor_retrieve(path: str | Path, *, require_answers: bool = True) -> dict[str, XorQuestion]:
    """Read an XOR-Retrieve jsonl file (``id``, ``question``, ``answers``, ``lang``).

    Malformed lines, missing or mistyped fields, empty questions and duplicate ids are
    errors naming the file and line. ``require_answers=False`` accepts the question-only
    test file.
    """
    path = Path(path)
    out: dict[str, XorQuestion] = {}
    for line, obj in read_jsonl(path):
        for key in ("id", "question", "lang") + (("answers",) if require_answers else ()):
            if obj.get(key) is None:
                raise DataError(path, f"missing field '{key}'", line)
        qid = record_id(path, line, obj["id"], "a non-empty string")
        if qid in out:
            raise DataError(path, f"duplicate question id '{qid}'", line)
        question, lang = obj["question"], obj["lang"]
        if not isinstance(question, str) or not question.strip():
            raise DataError(path, f"question '{qid}': 'question' must be a non-empty string", line)
        if not isinstance(lang, str) or not lang.strip():
            raise DataError(path, f"question '{qid}': 'lang' must be a non-empty string", line)
        answers = obj.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(path, f"question '{qid}': 'answers' must be a list of strings", line)
        out[qid] = XorQuestion(qid, question, lang, tuple(answers))
    if not out:
        raise DataError(path, "no questions")
    return out


def xor_queries(questions: Mapping[str, XorQuestion], lang: str | None = None) -> Queries:
    """The questions as :class:`Queries` (optionally one language's)."""
    return Queries({q.id: q.question for q in questions.values() if lang is None or q.lang == lang})


def _corpus_tsv(path: Path) -> Corpus:
    docs = Entries[Document](path, "passage", blank_ids=False)
    limit = sys.maxsize
    while True:  # passages can exceed csv's default 128 KiB field limit
        try:
            csv.field_size_limit(limit)
            break
        except OverflowError:
            limit //= 10
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if not docs.by_id and [c.strip().lower() for c in row] in (["id", "text", "title"], ["id", "text"]):
                continue
            if len(row) not in (2, 3):
                raise DataError(path, f"expected 2 or 3 columns (id, text[, title]), found {len(row)}",
                                line)
            did, text = row[0].strip(), row[1]
            title = row[2] if len(row) == 3 else ""
            docs.add(line, did, Document(text=text, title=title), text)
    return Corpus(docs.done("passages"))


def _corpus_jsonl(path: Path) -> Corpus:
    docs = Entries[Document](path, "passage", blank_ids=False)
    for line, obj in read_jsonl(path):
        key = "_id" if "_id" in obj else "id"
        did = obj.get(key)
        if isinstance(did, bool) or not isinstance(did, (str, int)):
            raise DataError(path, "missing or mistyped passage id ('_id' or 'id')", line)
        text, title = obj.get("text"), obj.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise DataError(path, "'text' (required) and 'title' must be strings", line)
        docs.add(line, str(did).strip(), Document(text=text, title=title), text)
    return Corpus(docs.done("passages"))


def load_passages(path: str | Path) -> Corpus:
    """A user-supplied passage corpus: ``.jsonl`` or DPR-style ``.tsv``."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: passage file not found")
    if path.suffix == ".jsonl":
        return _corpus_jsonl(path)
    if path.suffix in (".tsv", ".txt"):
        return _corpus_tsv(path)
    raise DataError(path, "unknown passage format (expected .jsonl or .tsv)")


def contexts_from_run(run: Run, corpus: Corpus, depth: int | None = None,
                      with_title: bool = False) -> dict[str, list[str]]:
    """Passage texts per query in rank order (score descending, ties by document id)."""
    out: dict[str, list[str]] = {}
    for qid, hits in run.items():
        ranked = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        texts = []
        for did, _ in ranked:
            if did not in corpus.docs:
                raise NotFoundError(f"run ranks passage '{did}' for question '{qid}', absent from "
                                    "the corpus")
            d = corpus.docs[did]
            texts.append(d.joined() if with_title else d.text)
        out[qid] = texts
    return out


def load_xor_predictions(path: str | Path) -> dict[str, list[str]]:
    """The official prediction file: a JSON list of ``{"id", "lang", "ctxs": [text, ...]}``."""
    path = Path(path)
    doc = load_json(path)
    if not isinstance(doc, list):
        raise DataError(path, "expected a JSON list of {id, lang, ctxs}")
    out: dict[str, list[str]] = {}
    for i, item in enumerate(doc):
        ctxs = item.get("ctxs") if isinstance(item, dict) else None
        if not isinstance(item, dict) or "id" not in item or not isinstance(ctxs, list):
            raise DataError(path, f"item [{i}]: expected an object with 'id' and a 'ctxs' list")
        texts = [c["text"] if isinstance(c, dict) and "text" in c else c for c in ctxs]
        if not all(isinstance(t, str) for t in texts):
            raise DataError(path, f"item [{i}]: 'ctxs' must hold passage texts")
        out[str(item["id"])] = texts
    return out


def get_tokenizer(tokenizer: Tokenizer) -> Callable[[str], list[str]]:
    if callable(tokenizer):
        return tokenizer
    if tokenizer == "whitespace":
        return str.split
    if tokenizer == "nltk":
        hint = ("tokenizer='nltk' (the official eval_xor_retrieve's word_tokenize) needs {}; or pass "
                "tokenizer='whitespace' (numbers then not comparable with published ones)")
        try:
            from nltk.tokenize import word_tokenize
        except ImportError:
            raise RkdError(hint.format("nltk: pip install nltk")) from None
        try:
            word_tokenize("Check. Punkt.")
        except LookupError:
            raise RkdError(hint.format("NLTK's punkt data: python -m nltk.downloader punkt_tab")) from None
        return word_tokenize
    raise ValueError(f"unknown tokenizer {tokenizer!r} (nltk, whitespace or a callable)")


def answer_in_first_tokens(contexts: Iterable[str], answers: Sequence[str], max_tokens: int,
                           tokenize: Callable[[str], list[str]]) -> bool:
    """The official hit test: an answer occurs in the first ``max_tokens`` tokens, space-joined."""
    tokens: list[str] = []
    for text in contexts:
        tokens += tokenize(text)
        if len(tokens) >= max_tokens:
            break
    joined = " ".join(tokens[:max_tokens])
    return any(a in joined for a in answers)


@dataclass
class XorRecall:
    """R@Nkt for one N: per-language counts and rates, their macro (official) and micro means."""

    max_tokens: int
    tokenizer: str
    per_lang: dict[str, dict[str, float]] = field(default_factory=dict)
    """lang -> {"count", "hit", "recall"}."""
    skipped_no_span_answer: int = 0
    missing_from_run: int = 0
    missing: str = "miss"

    @property
    def macro(self) -> float:
        return mean(v["recall"] for v in self.per_lang.values()) if self.per_lang else 0.0

    @property
    def micro(self) -> float:
        n = sum(v["count"] for v in self.per_lang.values())
        return sum(v["hit"] for v in self.per_lang.values()) / n if n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"metric": f"R@{self.max_tokens // 1000}kt" if self.max_tokens % 1000 == 0
                else f"R@{self.max_tokens}t",
                "max_tokens": self.max_tokens, "tokenizer": self.tokenizer,
                "macro": self.macro, "micro": self.micro, "per_lang": self.per_lang,
                "skipped_no_span_answer": self.skipped_no_span_answer,
                "missing_from_run": self.missing_from_run, "missing": self.missing}


def xor_recall_at_tokens(questions: Mapping[str, XorQuestion], contexts: Mapping[str, Sequence[str]],
                         max_tokens: int, *, tokenizer: Tokenizer = "nltk",
                         missing: Literal["miss", "skip"] = "miss") -> XorRecall:
    """R@``max_tokens``t over ``questions``, from each question's ranked passage texts."""
    tokenize = get_tokenizer(tokenizer)
    name = tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "__name__", "custom")
    res = XorRecall(max_tokens, name, missing=missing)
    for q in questions.values():
        answers = [a for a in q.answers if a not in SKIPPED_ANSWERS]
        if not answers:
            res.skipped_no_span_answer += 1
            continue
        if q.id not in contexts:
            res.missing_from_run += 1
            if missing == "skip":
                continue
        stats = res.per_lang.setdefault(q.lang, {"count": 0, "hit": 0, "recall": 0.0})
        stats["count"] += 1
        if answer_in_first_tokens(contexts.get(q.id, ()), answers, max_tokens, tokenize):
            stats["hit"] += 1
    for stats in res.per_lang.values():
        stats["recall"] = stats["hit"] / stats["count"]
    res.per_lang = dict(sorted(res.per_lang.items()))
    return res


def evaluate_xor_retrieve(questions: Mapping[str, XorQuestion], contexts: Mapping[str, Sequence[str]],
                          kts: Sequence[int] = (2, 5), *, tokenizer: Tokenizer = "nltk",
                          missing: Literal["miss", "skip"] = "miss") -> dict[str, XorRecall]:
    """R@2kt and R@5kt (by default): ``{"R@2kt": XorRecall, "R@5kt": ...}``."""
    return {f"R@{k}kt": xor_recall_at_tokens(questions, contexts, k * 1000, tokenizer=tokenizer,
                                             missing=missing)
            for k in kts}
