"""A local copy of XOR-TyDi XOR-Retrieve (format ``xor-retrieve``) as a registry dataset.

The folder holds the release's question file of each split and the English passages::

    xor_<split>_retrieve_eng_span*.jsonl   {"id", "question", "answers", "lang"} per line
    corpus.jsonl, passages.jsonl,          the passages (the first found): jsonl (_id or id,
    psgs_w100.tsv or passages.tsv          title, text) or DPR-style tsv (id, text, title)

(``xor_dev_retrieve_eng_span_v1_1.jsonl`` is the v1.1 dev file.) There are no qrels: a question
is answered when an answer string occurs in the first N thousand tokens of its ranked passages
(R@2kt, R@5kt), which :mod:`retrieval_kd.xling.xor_tydi` computes; the loaded
:class:`Dataset` has every question as a query and empty qrels, and :func:`xor_questions` gives
the questions with their answers and languages for that metric.
"""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.data.types import Dataset
from retrieval_kd.errors import NotFoundError

PASSAGE_FILES = ("corpus.jsonl", "passages.jsonl", "psgs_w100.tsv", "passages.tsv")


def layout(split: str) -> list[str]:
    return [f"xor_{split}_retrieve_eng_span*.jsonl", " or ".join(PASSAGE_FILES)]


def _files(root: Path, split: str) -> tuple[Path, Path]:
    questions = sorted(root.glob(layout(split)[0]), key=lambda p: p.name, reverse=True)  # v1_1 first
    passages = [root / f for f in PASSAGE_FILES if (root / f).is_file()]
    if not questions or not passages:
        raise NotFoundError(f"{root}: XOR-Retrieve {split} needs {', '.join(layout(split))} "
                            f"(missing: {'questions' if not questions else 'passages'})")
    return questions[0], passages[0]


def xor_questions(root: str | Path, split: str):
    """The split's questions (id, question, answers, lang), for R@kt."""
    from retrieval_kd.xling.xor_tydi import load_xor_retrieve

    return load_xor_retrieve(_files(Path(root), split)[0])


def load_xor_dataset(root: str | Path, split: str, name: str = "xor-tydi") -> Dataset:
    """Every question of the split as a query over the passages; no qrels (R@kt uses answers)."""
    from retrieval_kd.xling.xor_tydi import load_passages, load_xor_retrieve, xor_queries

    qfile, pfile = _files(Path(root), split)
    questions = load_xor_retrieve(qfile)
    return Dataset(name=name, split=split, corpus=load_passages(pfile), queries=xor_queries(questions),
                   qrels={}, sources={"corpus": str(pfile), "queries": str(qfile)})
