"""TREC formats: topics (TSV or SGML ``<top>``), qrels, run files and a TSV corpus."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from retrieval_kd.artifacts import atomic_write_text
from retrieval_kd.data.readers import Entries, read_qrels, read_tsv
from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries, Run
from retrieval_kd.errors import DataError, NotFoundError

_TOP = re.compile(r"<top>(.*?)</top>", re.S | re.I)
_NUM = re.compile(r"<num>\s*(?:Number:)?\s*([^\s<]+)", re.I)
_TITLE = re.compile(r"<title>\s*(?:Topic:)?\s*(.*?)\s*(?=<|\Z)", re.S | re.I)


def load_topics(path: str | Path) -> Queries:
    """Read TREC topics: SGML ``<top><num>..<title>..`` blocks, or ``qid<TAB>text`` lines."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: file not found")
    raw = path.read_text(encoding="utf-8")
    texts = Entries[str](path, "query")
    if "<top>" in raw.lower():
        for m in _TOP.finditer(raw):
            lineno = raw.count("\n", 0, m.start()) + 1
            num, title = _NUM.search(m.group(1)), _TITLE.search(m.group(1))
            if not num or not title or not title.group(1).strip():
                raise DataError(path, "topic without <num> or <title>", lineno)
            text = " ".join(title.group(1).split())
            texts.add(lineno, num.group(1), text, text)
    else:
        for lineno, (qid, text) in read_tsv(path, 2):
            texts.add(lineno, qid, text, text)
    return Queries(texts.done("topics"))


def load_corpus_tsv(path: str | Path) -> Corpus:
    """Read ``docid<TAB>text`` lines (tabs after the first belong to the text). A large file (MS
    MARCO's 8.8M-passage collection) is read through its memory-mapped Arrow copy
    (:mod:`retrieval_kd.data.arrow_corpus`)."""
    from retrieval_kd.data.arrow_corpus import open_arrow_corpus, wants_arrow

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: file not found")
    if wants_arrow(path):
        return open_arrow_corpus(path)
    docs = Entries[Document](path, "document")
    for lineno, did, text in corpus_tsv_lines(path):
        docs.add(lineno, did, Document(text=text), text)
    return Corpus(docs.done("documents"))


def corpus_tsv_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, docid, text) of each non-blank ``docid<TAB>text`` line; a line without a tab
    is an error naming it."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            did, sep, text = line.partition("\t")
            if not sep:
                raise DataError(path, "expected 'docid<TAB>text'", lineno)
            yield lineno, did, text


def load_trec_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels: ``qid iteration docid relevance`` (whitespace separated)."""
    path = Path(path)
    rows = read_tsv(path, 4, sep=None)
    return read_qrels(path, ((lineno, qid, did, rel) for lineno, (qid, _it, did, rel) in rows))


def load_trec_run(path: str | Path) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``); a repeated (qid, docid) is an error."""
    path = Path(path)
    run: Run = {}
    for lineno, fields in read_tsv(path, 6, sep=None):
        qid, _q0, did, _rank, score, _tag = fields
        try:
            val = float(score)
        except ValueError:
            raise DataError(path, f"score '{score}' is not a number", lineno) from None
        ranked = run.setdefault(qid, {})
        if did in ranked:
            raise DataError(path, f"document '{did}' listed twice for query '{qid}'", lineno)
        ranked[did] = val
    return run


def sorted_hits(hits: dict[str, float]) -> list[tuple[str, float]]:
    """Hits by descending score, ties broken by document id (deterministic ranks)."""
    return sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))


def trec_lines(run: Run, tag: str) -> Iterator[str]:
    """The lines (without newline) of a TREC run: ``qid Q0 docid rank score tag``, queries in
    ``run``'s order, each query's hits ranked by :func:`sorted_hits`, scores as ``repr(float)``."""
    for qid, hits in run.items():
        for rank, (did, score) in enumerate(sorted_hits(hits), 1):
            yield f"{qid} Q0 {did} {rank} {float(score)!r} {tag}"


def format_trec_run(run: Run, tag: str) -> str:
    return "\n".join(trec_lines(run, tag)) + "\n"


def write_trec_run(run: Run, path: str | Path, tag: str = "rkd") -> None:
    """Atomically write a TREC run file, hits ranked by score."""
    atomic_write_text(path, format_trec_run(run, tag))


def load_trec_dir(root: str | Path, name: str | None = None, split: str = "test") -> Dataset:
    """Load a TREC-style directory: ``corpus.tsv``, ``queries.tsv`` (or topics), ``qrels.txt``."""
    root = Path(root)
    corpus = load_corpus_tsv(root / "corpus.tsv")
    all_queries = load_topics(root / "queries.tsv")
    qrels = load_trec_qrels(root / "qrels.txt")
    return Dataset.judged(name or root.name, split, corpus, all_queries, qrels, sources={
        "corpus": str(root / "corpus.tsv"),
        "queries": str(root / "queries.tsv"),
        "qrels": str(root / "qrels.txt"),
    })
