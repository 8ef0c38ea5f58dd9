"""Loader for a BEIR dataset directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.data.readers import add_judgement, read_jsonl, read_tsv, require_str
from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries
from retrieval_kd.errors import DataError, NotFoundError

QRELS_HEADER = ("query-id", "corpus-id", "score")


def load_corpus_jsonl(path: str | Path) -> Corpus:
    """Read ``corpus.jsonl`` (``_id``, ``title``, ``text``); duplicate ids and empty documents are errors."""
    path = Path(path)
    docs: dict[str, Document] = {}
    for lineno, obj in read_jsonl(path):
        did = require_str(path, lineno, obj, "_id", required=True)
        text = require_str(path, lineno, obj, "text", required=True)
        title = require_str(path, lineno, obj, "title", required=False)
        if not did.strip():
            raise DataError(path, "empty document id", lineno)
        if did in docs:
            raise DataError(path, f"duplicate document id '{did}'", lineno)
        if not (text.strip() or title.strip()):
            raise DataError(path, f"document '{did}' has empty title and text", lineno)
        docs[did] = Document(text=text, title=title)
    if not docs:
        raise DataError(path, "no documents")
    return Corpus(docs)


def load_queries_jsonl(path: str | Path) -> Queries:
    """Read ``queries.jsonl`` (``_id``, ``text``); duplicate ids and empty texts are errors."""
    path = Path(path)
    texts: dict[str, str] = {}
    for lineno, obj in read_jsonl(path):
        qid = require_str(path, lineno, obj, "_id", required=True)
        text = require_str(path, lineno, obj, "text", required=True)
        if not qid.strip():
            raise DataError(path, "empty query id", lineno)
        if qid in texts:
            raise DataError(path, f"duplicate query id '{qid}'", lineno)
        if not text.strip():
            raise DataError(path, f"query '{qid}' has empty text", lineno)
        texts[qid] = text
    if not texts:
        raise DataError(path, "no queries")
    return Queries(texts)


def load_qrels_tsv(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (optional header ``query-id corpus-id score``)."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, (qid, did, rel) in read_tsv(path, 3):
        if lineno == 1 and (qid, did, rel) == QRELS_HEADER:
            continue
        add_judgement(qrels, path, lineno, qid, did, rel)
    if not qrels:
        raise DataError(path, "no judgements")
    return qrels


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
