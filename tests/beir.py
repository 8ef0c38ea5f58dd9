"""Small BEIR folders for the tests: one writer and the content the tests share.

A BEIR folder is ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``. Every test that
needs one builds it here:

- :func:`write_beir` writes given documents, queries and judgements (any content, including
  malformed lines);
- :func:`tiny_beir` is the three-document folder (two judged queries and one unjudged);
- :func:`random_beir` is a reproducible folder of random word sequences in which query ``i``
  is the first words of document ``i`` and is judged relevant to it.

``conftest.py`` offers :func:`tiny_beir` as the ``tiny_ds`` fixture.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.tiny_models import WORDS

QRELS_HEADER = "query-id\tcorpus-id\tscore\n"

Line = Mapping[str, object] | str
"""A JSONL record: a mapping is written as JSON, a string verbatim (blank or malformed lines)."""
Qrels = str | Iterable[tuple[str, str, int]]
"""One split's judgements: ``(query-id, corpus-id, score)`` rows, written under the BEIR header,
or the file's text verbatim (no header added)."""


def _jsonl(lines: Iterable[Line]) -> str:
    return "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)


def write_beir(root: Path, corpus: Iterable[Line], queries: Iterable[Line],
               qrels: Mapping[str, Qrels]) -> Path:
    """Write a BEIR folder at ``root`` (created with its parents) and return ``root``.

    ``qrels`` maps a split name (``test``, ``train``...) to its judgements."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(_jsonl(corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text(_jsonl(queries), encoding="utf-8")
    for split, rows in qrels.items():
        text = rows if isinstance(rows, str) else QRELS_HEADER + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
        (root / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return root


TINY_DOCS = (
    {"_id": "d1", "title": "Tumor", "text": "tumor cells grow fast"},
    {"_id": "d2", "title": "Blood", "text": "blood pressure drug trial"},
    {"_id": "d3", "title": "", "text": "virus immune response"},
)
TINY_QUERIES = (
    {"_id": "q1", "text": "tumor growth"},
    {"_id": "q2", "text": "blood pressure"},
    {"_id": "q3", "text": "unjudged query"},
)
TINY_QRELS = {"test": (("q1", "d1", 1), ("q2", "d2", 2))}


def tiny_beir(root: Path, *, corpus: Iterable[Line] = TINY_DOCS, queries: Iterable[Line] = TINY_QUERIES,
              qrels: Mapping[str, Qrels] | None = None) -> Path:
    """Three documents; ``q1`` judged relevant to ``d1`` (1), ``q2`` to ``d2`` (2), ``q3`` unjudged.

    ``corpus`` replaces the documents (e.g. with a malformed line), ``qrels`` the judgements."""
    return write_beir(root, corpus, queries, TINY_QRELS if qrels is None else qrels)


def random_beir(root: Path, n_docs: int = 120, n_queries: int = 12, seed: int = 0, *,
                words: Sequence[str] = WORDS, doc_words: int | tuple[int, int] = (6, 40),
                distinct: bool = False, query_words: int = 4, split: str = "test") -> Path:
    """``n_docs`` documents of random ``words`` (``random.Random(seed)``) and ``n_queries``
    queries; query ``q<i>`` is the first ``query_words`` words of document ``d<i>`` and is judged
    relevant to it in ``qrels/<split>.tsv``. Titles are empty.

    ``doc_words`` is a document's length, or a ``(low, high)`` range drawn per document;
    ``distinct`` draws a document's words without repetition (``random.sample``)."""
    rng = random.Random(seed)

    def text() -> str:
        if distinct:
            assert isinstance(doc_words, int)
            return " ".join(rng.sample(list(words), doc_words))
        k = rng.randint(*doc_words) if isinstance(doc_words, tuple) else doc_words
        return " ".join(rng.choices(words, k=k))

    docs = [text() for _ in range(n_docs)]
    return write_beir(
        root,
        ({"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(docs)),
        ({"_id": f"q{i}", "text": " ".join(docs[i].split()[:query_words])} for i in range(n_queries)),
        {split: [(f"q{i}", f"d{i}", 1) for i in range(n_queries)]},
    )
