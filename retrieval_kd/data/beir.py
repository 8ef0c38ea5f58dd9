"""Loader for a BEIR dataset directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval_kd.data.readers import Entries, read_jsonl, read_qrels, read_tsv, require_str
from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries
from retrieval_kd.errors import NotFoundError

QRELS_HEADER = ("query-id", "corpus-id", "score")


def _records(path: Path) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(line number, ``_id``, ``text``, the object) of each record of a BEIR jsonl file."""
    for lineno, obj in read_jsonl(path):
        yield (lineno, require_str(path, lineno, obj, "_id", required=True),
               require_str(path, lineno, obj, "text", required=True), obj)


def load_corpus_jsonl(path: str | Path) -> Corpus:
    """Read ``corpus.jsonl`` (``_id``, ``title``, ``text``); duplicate ids and empty documents are errors.
    A large file is read through its memory-mapped Arrow copy (:mod:`retrieval_kd.data.arrow_corpus`)."""
    path = Path(path)
    from retrieval_kd.data.arrow_corpus import open_arrow_corpus, wants_arrow

    if path.is_file() and wants_arrow(path):
        return open_arrow_corpus(path)
    docs = Entries[Document](path, "document", blank_ids=False)
    for lineno, did, text, obj in _records(path):
        title = require_str(path, lineno, obj, "title", required=False)
        docs.add(lineno, did, Document(text=text, title=title), title + text, "title and text")
    return Corpus(docs.done("documents"))


def load_queries_jsonl(path: str | Path) -> Queries:
    """Read ``queries.jsonl`` (``_id``, ``text``); duplicate ids and empty texts are errors."""
    path = Path(path)
    texts = Entries[str](path, "query", blank_ids=False)
    for lineno, qid, text, _ in _records(path):
        texts.add(lineno, qid, text, text)
    return Queries(texts.done("queries"))


def load_qrels_tsv(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (optional header ``query-id corpus-id score``)."""
    path = Path(path)
    rows = ((lineno, qid, did, rel) for lineno, (qid, did, rel) in read_tsv(path, 3))
    return read_qrels(path, (r for r in rows if not (r[0] == 1 and r[1:] == QRELS_HEADER)))


def beir_splits(root: str | Path) -> list[str]:
    qdir = Path(root) / "qrels"
    return sorted(p.stem for p in qdir.glob("*.tsv")) if qdir.is_dir() else []


def load_beir(root: str | Path, split: str, name: str | None = None) -> Dataset:
    """Load one split of a BEIR directory; queries are restricted to those judged in the split."""
    root = Path(root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = ", ".join(beir_splits(root)) or "none"
        raise NotFoundError(f"{qrels_path}: no qrels for split '{split}' (splits here: {have})")
    corpus = load_corpus_jsonl(root / "corpus.jsonl")
    all_queries = load_queries_jsonl(root / "queries.jsonl")
    qrels = load_qrels_tsv(qrels_path)
    return Dataset.judged(name or root.name, split, corpus, all_queries, qrels, sources={
        "corpus": str(root / "corpus.jsonl"),
        "queries": str(root / "queries.jsonl"),
        "qrels": str(qrels_path),
    })
