"""Local copy of MS MARCO passage (format ``msmarco-passage``): the official release's files.

One folder (``msmarco-passage/`` under the data home) holds the shared collection and, per
split, the release's query and qrels files under their published names, so the downloaded
files can be dropped in unchanged:

- ``collection.tsv``: ``pid<TAB>passage`` (8,841,823 lines in the full release)
- per split, :data:`SPLIT_FILES`: queries ``qid<TAB>text``; qrels TREC ``qid 0 pid rel``
  (tab- or space-separated; graded 0-3 for TREC DL)

A split's queries are those its qrels judge (DL: 43 of 200 in 2019, 54 of 200 in 2020, the
``.../judged`` subsets of ir_datasets). The collection is read whole into the corpus dict
(:class:`~retrieval_kd.data.types.Corpus`), as every loader here does; the release's text is
read as is (ir_datasets additionally repairs its mojibake).
"""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.data.trec import load_corpus_tsv, load_topics, load_trec_qrels
from retrieval_kd.data.types import Dataset
from retrieval_kd.errors import NotFoundError

COLLECTION = "collection.tsv"
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("queries.train.tsv", "qrels.train.tsv"),
    "dev-small": ("queries.dev.small.tsv", "qrels.dev.small.tsv"),
    "trec-dl-2019": ("msmarco-test2019-queries.tsv", "2019qrels-pass.txt"),
    "trec-dl-2020": ("msmarco-test2020-queries.tsv", "2020qrels-pass.txt"),
}
"""split -> (queries file, qrels file), the MS MARCO / TREC DL release names."""


def layout(split: str | None = None) -> str:
    """The files a local copy needs (for ``split``, or every split), for error messages."""
    splits = [split] if split in SPLIT_FILES else list(SPLIT_FILES)
    return ", ".join([COLLECTION, *(f for s in splits for f in SPLIT_FILES[s])])


def load_msmarco_passage(root: str | Path, split: str, name: str = "msmarco-passage") -> Dataset:
    """Load one split of a local MS MARCO passage folder (see the module doc)."""
    root = Path(root)
    if split not in SPLIT_FILES:
        raise NotFoundError(f"msmarco-passage has no split '{split}' (splits: {', '.join(SPLIT_FILES)})")
    qfile, rfile = (root / f for f in SPLIT_FILES[split])
    missing = [p.name for p in (root / COLLECTION, qfile, rfile) if not p.is_file()]
    if missing:
        raise NotFoundError(f"{root}: split '{split}' needs {layout(split)} (missing: {', '.join(missing)})")
    qrels = load_trec_qrels(rfile)
    all_queries = load_topics(qfile)
    corpus = load_corpus_tsv(root / COLLECTION)
    return Dataset.judged(name, split, corpus, all_queries, qrels, sources={
        "corpus": str(root / COLLECTION), "queries": str(qfile), "qrels": str(rfile)})
