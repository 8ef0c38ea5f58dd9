"""Local copies of MIRACL and Mr. TyDi (formats ``miracl``, ``mr-tydi``): the releases' folders.

Both are monolingual Wikipedia passage retrieval, one dataset per language, loaded as
``miracl:<lang>`` / ``mr-tydi:<lang>`` (``<lang>`` an ISO code). The files are the ones the
releases ship (the same ir_datasets downloads), dropped unchanged under the entry's folder:

MIRACL v1.0 (huggingface.co/datasets/miracl/miracl and .../miracl-corpus)::

    miracl-v1.0-<lang>/topics/topics.miracl-v1.0-<lang>-<split>.tsv   qid<TAB>query
    miracl-v1.0-<lang>/qrels/qrels.miracl-v1.0-<lang>-<split>.tsv     qid Q0 docid rel (TREC)
    miracl-corpus-v1.0-<lang>/docs-<i>.jsonl.gz                       {"docid", "title", "text"}

Mr. TyDi v1.0 (github.com/castorini/mr.tydi, ``mrtydi-v1.0-<language>.tar.gz`` unpacked)::

    mrtydi-v1.0-<language>/topic.<split>.tsv                          qid<TAB>query
    mrtydi-v1.0-<language>/qrels.<split>.txt                          qid Q0 docid rel (TREC)
    mrtydi-v1.0-<language>/collection/docs.jsonl.gz                   {"id", "contents"[, "title"]}

Corpus files may also be uncompressed (``.jsonl``). A split's queries are those its qrels judge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from retrieval_kd.data.readers import Entries, read_jsonl, require_str
from retrieval_kd.data.trec import load_topics, load_trec_qrels
from retrieval_kd.data.types import Corpus, Dataset, Document
from retrieval_kd.errors import NotFoundError

MRTYDI_LANGS = {"ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
                "ja": "japanese", "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu",
                "th": "thai"}
"""Mr. TyDi's ISO codes -> the language names in its release folders."""


def _corpus(files: list[Path], id_key: str, text_key: str) -> Corpus:
    """Documents of one or more jsonl files; an id repeated in any of them is an error."""
    docs = Entries[Document](files[0], "passage", blank_ids=False)
    for path in files:
        docs.path = path
        for lineno, obj in read_jsonl(path):
            if isinstance(obj.get(id_key), int) and not isinstance(obj.get(id_key), bool):
                obj[id_key] = str(obj[id_key])
            did = require_str(path, lineno, obj, id_key, required=True)
            text = require_str(path, lineno, obj, text_key, required=True)
            title = require_str(path, lineno, obj, "title", required=False)
            docs.add(lineno, did, Document(text=text, title=title), title + text, "title and text")
    return Corpus(docs.done("passages"))


def _first(root: Path, patterns: list[str]) -> list[Path]:
    for pat in patterns:
        if found := sorted(root.glob(pat), key=lambda p: (len(p.name), p.name)):
            return found
    return []


def miracl_layout(lang: str, split: str) -> list[str]:
    return [f"miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-{split}.tsv",
            f"miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-{split}.tsv",
            f"miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz or miracl-corpus-v1.0-{lang}/docs-*.jsonl"]


def mrtydi_layout(lang: str, split: str) -> list[str]:
    folder = f"mrtydi-v1.0-{MRTYDI_LANGS.get(lang, '<language>')}"
    return [f"{folder}/topic.{split}.tsv", f"{folder}/qrels.{split}.txt",
            f"{folder}/collection/docs.jsonl.gz or {folder}/collection/docs.jsonl"]


def _load(root: Path, layout: list[str], id_key: str, text_key: str, name: str, split: str) -> Dataset:
    topics, qrels_file = root / layout[0], root / layout[1]
    corpus_files = _first(root, [p.strip() for p in layout[2].split(" or ")])
    missing = [f for f, ok in zip(layout, (topics.is_file(), qrels_file.is_file(), bool(corpus_files))) if not ok]
    if missing:
        raise NotFoundError(f"{root}: {name}/{split} needs {', '.join(layout)} (missing: {', '.join(missing)})")
    qrels = load_trec_qrels(qrels_file)
    corpus = _corpus(corpus_files, id_key, text_key)
    return Dataset.judged(name, split, corpus, load_topics(topics), qrels, sources={
        "corpus": ", ".join(map(str, corpus_files)), "queries": str(topics), "qrels": str(qrels_file)})


def load_miracl(root: str | Path, lang: str, split: str, name: str | None = None) -> Dataset:
    """One language's split of a local MIRACL copy (see the module doc)."""
    return _load(Path(root), miracl_layout(lang, split), "docid", "text", name or f"miracl:{lang}", split)


def load_mrtydi(root: str | Path, lang: str, split: str, name: str | None = None) -> Dataset:
    """One language's split of a local Mr. TyDi copy (see the module doc)."""
    if lang not in MRTYDI_LANGS:
        raise NotFoundError(f"Mr. TyDi has no language '{lang}' (languages: {', '.join(MRTYDI_LANGS)})")
    return _load(Path(root), mrtydi_layout(lang, split), "id", "contents", name or f"mr-tydi:{lang}", split)


LOADERS: dict[str, Callable[..., Dataset]] = {"miracl": load_miracl, "mr-tydi": load_mrtydi}
LAYOUTS: dict[str, Callable[[str, str], list[str]]] = {"miracl": miracl_layout, "mr-tydi": mrtydi_layout}
