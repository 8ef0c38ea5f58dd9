"""XQuAD-R (LAReQA): parallel paragraph and sentence retrieval across 11 languages.

The release is one SQuAD-style JSON per language (``data[].paragraphs[]`` with ``context``,
``sentences``, ``sentence_breaks`` and ``qas[]``); the 11 files are parallel: the same
articles, paragraphs and question ids in the same order.

Two kinds of :class:`~retrieval_kd.data.types.Dataset` are built from them:

* paragraph retrieval ``xquad-r:<q>-<p>``: the questions in language ``q`` against the 240
  paragraphs in language ``p`` (``de-en`` is X->en, ``en-de`` en->X, ``de-de`` same-language);
  a question's one relevant item is its own paragraph;
* LAReQA ``xquad-r:lareqa-<q>``: the questions in ``q`` against the pool of every sentence of
  every language (13,014 candidates); the relevant items are the sentence holding the answer
  in each of the 11 languages (11 per question), as in LAReQA section 3.1.

Splits: ``test`` holds every question (the published protocol); ``train`` and ``heldout``
split them by article, even and odd positions in the file (XQuAD's 48 articles, 5 paragraphs
each), so a student trained on ``train`` never sees a ``heldout`` question or its paragraph as
a positive; the corpus is the whole pool in every split.

Ids are stable and readable: queries keep the SQuAD question id (shared by the 11
languages, so a score store built on one language joins the others by id); a paragraph is
``<lang>_<article:02d>_<paragraph:02d>`` and a sentence
``<lang>_<article:02d>_<paragraph:02d>_<sentence:02d>`` (positions in the file). Titles are
not used: the release keeps the English article title in every language.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries, cross_check
from retrieval_kd.errors import DataError, NotFoundError
from retrieval_kd.settings import data_home
from retrieval_kd.xling._json import load_json

XQUAD_R_LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
DIR = "xquad-r"
SPLITS = ("test", "train", "heldout")
POOL_SUFFIX = "+pool"
"""A variant ``<q>-<p>+pool``: the pool's paragraphs in ``q`` are queries too (training only)."""
"""``test``: every question; ``train`` / ``heldout``: the questions of even / odd articles."""


def in_split(article: int, split: str) -> bool:
    """Whether a question of article ``article`` (its position in the file) belongs to ``split``."""
    if split not in SPLITS:
        raise NotFoundError(f"XQuAD-R has no split '{split}' (splits: {', '.join(SPLITS)})")
    return split == "test" or (article % 2 == 0) == (split == "train")


@dataclass(frozen=True)
class Paragraph:
    article: int
    index: int
    context: str
    sentences: tuple[str, ...]
    """Empty when the file has no sentence annotation (plain XQuAD)."""

    def doc_id(self, lang: str) -> str:
        return f"{lang}_{self.article:02d}_{self.index:02d}"

    def sentence_id(self, lang: str, s: int) -> str:
        return f"{lang}_{self.article:02d}_{self.index:02d}_{s:02d}"


@dataclass
class XQuADRFile:
    """One language's file, checked."""

    lang: str
    path: Path
    paragraphs: list[Paragraph] = field(default_factory=list)
    questions: dict[str, str] = field(default_factory=dict)
    """question id -> text, in file order."""
    paragraph_of: dict[str, int] = field(default_factory=dict)
    """question id -> index into ``paragraphs``."""
    answer_sentences: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """question id -> sentence indices (in its paragraph) holding an answer start; empty
    when the file has no sentence annotation or the question no answer."""

    def qids_by_paragraph(self) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.paragraphs]
        for q, i in self.paragraph_of.items():
            out[i].append(q)
        return out


def _field(path: Path, where: str, obj: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict):
        raise DataError(path, f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(path, f"{where}: missing field '{key}'")
    val = obj[key]
    if not isinstance(val, kind) or isinstance(val, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(path, f"{where}.{key}: expected {names}, got {type(val).__name__}")
    return val


def _sentence_of(breaks: list[tuple[int, int]], pos: int) -> int | None:
    for i, (b, e) in enumerate(breaks):
        if b <= pos < e:
            return i
    return None


def read_xquad_r(path: str | Path, lang: str | None = None) -> XQuADRFile:
    """Read and check one language file (XQuAD-R, or plain XQuAD without sentences).

    Every problem is a :class:`DataError` naming the file and the JSON path of the bad item
    (the release files are single-line JSON, so the path is what locates it); a syntax error
    names the line.
    """
    path = Path(path)
    lang = lang or path.stem
    doc = load_json(path)
    out = XQuADRFile(lang=lang, path=path)
    articles = _field(path, "top level", doc, "data", list)
    for a, art in enumerate(articles):
        paras = _field(path, f"data[{a}]", art, "paragraphs", list)
        for p, para in enumerate(paras):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(path, where, para, "context", str)
            if not context.strip():
                raise DataError(path, f"{where}: empty context")
            sentences: tuple[str, ...] = ()
            breaks: list[tuple[int, int]] = []
            if "sentences" in para or "sentence_breaks" in para:
                raw_s = _field(path, where, para, "sentences", list)
                raw_b = _field(path, where, para, "sentence_breaks", list)
                if len(raw_s) != len(raw_b):
                    raise DataError(path, f"{where}: {len(raw_s)} sentences but {len(raw_b)} "
                                          "sentence_breaks")
                for s, (sent, br) in enumerate(zip(raw_s, raw_b)):
                    if not isinstance(sent, str) or not sent.strip():
                        raise DataError(path, f"{where}.sentences[{s}]: empty or not a string")
                    if (not isinstance(br, list) or len(br) != 2
                            or not all(isinstance(x, int) and not isinstance(x, bool) for x in br)
                            or not 0 <= br[0] <= br[1] <= len(context)):
                        raise DataError(path, f"{where}.sentence_breaks[{s}]: expected [start, end] "
                                              f"within the context, got {br!r}")
                    breaks.append((br[0], br[1]))
                sentences = tuple(raw_s)
            pi = len(out.paragraphs)
            out.paragraphs.append(Paragraph(a, p, context, sentences))
            for k, qa in enumerate(_field(path, where, para, "qas", list)):
                qw = f"{where}.qas[{k}]"
                qid = _field(path, qw, qa, "id", str)
                text = _field(path, qw, qa, "question", str)
                if not qid.strip():
                    raise DataError(path, f"{qw}: empty question id")
                if qid in out.questions:
                    raise DataError(path, f"{qw}: duplicate question id '{qid}'")
                if not text.strip():
                    raise DataError(path, f"{qw}: question '{qid}' has empty text")
                sents: list[int] = []
                for j, ans in enumerate(qa.get("answers") or []):
                    start = _field(path, f"{qw}.answers[{j}]", ans, "answer_start", int)
                    if not 0 <= start < len(context):
                        raise DataError(path, f"{qw}.answers[{j}]: answer_start {start} outside "
                                              f"the context ({len(context)} characters)")
                    if breaks:
                        s = _sentence_of(breaks, start)
                        if s is None:
                            raise DataError(path, f"{qw}.answers[{j}]: answer_start {start} falls "
                                                  "in no sentence")
                        if s not in sents:
                            sents.append(s)
                out.questions[qid] = text
                out.paragraph_of[qid] = pi
                out.answer_sentences[qid] = tuple(sents)
    if not out.questions:
        raise DataError(path, "no questions")
    return out


def check_parallel(ref: XQuADRFile, other: XQuADRFile) -> None:
    """Require the same paragraphs and question ids, in the same order."""
    if ref is other:
        return
    if len(ref.paragraphs) != len(other.paragraphs):
        raise DataError(other.path, f"not parallel to {ref.path}: {len(other.paragraphs)} paragraphs "
                                    f"vs {len(ref.paragraphs)}")
    for pr, po, qr, qo in zip(ref.paragraphs, other.paragraphs, ref.qids_by_paragraph(),
                              other.qids_by_paragraph()):
        if (pr.article, pr.index) != (po.article, po.index) or qr != qo:
            raise DataError(other.path, f"not parallel to {ref.path} at data[{po.article}]."
                                        f"paragraphs[{po.index}]: questions {qo[:3]} vs {qr[:3]}")


def xquad_r_root(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else data_home() / DIR


def _lang_file(root: Path, lang: str) -> Path:
    if lang not in XQUAD_R_LANGS:
        raise NotFoundError(f"XQuAD-R has no language '{lang}' (languages: {' '.join(XQUAD_R_LANGS)})")
    path = root / f"{lang}.json"
    if not path.is_file():
        raise NotFoundError(f"{path}: XQuAD-R file not found (set RKD_DATA_HOME to a folder "
                            f"holding '{DIR}/')")
    return path


def pool_query_id(p: Paragraph) -> str:
    """A paragraph's id as a query, the same in every language (``pool_<article>_<paragraph>``)."""
    return f"pool_{p.article:02d}_{p.index:02d}"


def load_xquad_r(query_lang: str, passage_lang: str, root: str | Path | None = None,
                 name: str | None = None, split: str = "test", pool_queries: bool = False) -> Dataset:
    """Paragraph retrieval: questions in ``query_lang`` over the paragraphs in ``passage_lang``;
    ``split`` picks the questions (:data:`SPLITS`), the pool is every paragraph. With
    ``pool_queries`` (variant ``<q>-<p>+pool``) every paragraph of the pool in ``query_lang`` is
    also a query (:func:`pool_query_id`, no qrels, in every split): the collection in the query
    language, for training a query encoder on it (never for evaluation)."""
    root = xquad_r_root(root)
    qf = read_xquad_r(_lang_file(root, query_lang), query_lang)
    pf = qf if passage_lang == query_lang else read_xquad_r(_lang_file(root, passage_lang), passage_lang)
    check_parallel(pf, qf)
    docs = {p.doc_id(pf.lang): Document(text=p.context) for p in pf.paragraphs}
    qrels: Qrels = {q: {pf.paragraphs[i].doc_id(pf.lang): 1} for q, i in qf.paragraph_of.items()
                    if in_split(pf.paragraphs[i].article, split)}
    texts = {q: t for q, t in qf.questions.items() if q in qrels}
    if pool_queries:
        texts.update({pool_query_id(p): p.context for p in qf.paragraphs})
    corpus, queries = Corpus(docs), Queries(texts)
    return Dataset(
        name=name or f"xquad-r:{query_lang}-{passage_lang}", split=split, corpus=corpus,
        queries=queries, qrels=qrels,
        sources={"queries": str(qf.path), "corpus": str(pf.path),
                 "qrels": f"each question's own paragraph (parallel positions in {pf.path.name})"},
        report=cross_check(corpus, queries, qrels),
    )


def load_lareqa(query_lang: str, root: str | Path | None = None,
                pool_langs: Iterable[str] = XQUAD_R_LANGS, name: str | None = None) -> Dataset:
    """LAReQA any-language sentence pool: questions in ``query_lang``; candidates are every
    sentence of every language in ``pool_langs``; relevant: the answer sentence in each of them."""
    root = xquad_r_root(root)
    pool_langs = list(dict.fromkeys(pool_langs))
    files = {lang: read_xquad_r(_lang_file(root, lang), lang) for lang in pool_langs}
    qf = files.get(query_lang) or read_xquad_r(_lang_file(root, query_lang), query_lang)
    docs: dict[str, Document] = {}
    qrels: Qrels = {q: {} for q in qf.questions}
    for lang, f in files.items():
        check_parallel(qf, f)
        for p in f.paragraphs:
            if not p.sentences:
                raise DataError(f.path, f"data[{p.article}].paragraphs[{p.index}]: no sentence "
                                        "annotation (LAReQA needs XQuAD-R's 'sentences')")
            for s, sent in enumerate(p.sentences):
                docs[p.sentence_id(lang, s)] = Document(text=sent)
        for q in qf.questions:
            p = f.paragraphs[f.paragraph_of[q]]
            for s in f.answer_sentences[q]:
                qrels[q][p.sentence_id(lang, s)] = 1
    qrels = {q: r for q, r in qrels.items() if r}
    queries = Queries({q: t for q, t in qf.questions.items() if q in qrels})
    corpus = Corpus(docs)
    return Dataset(
        name=name or f"xquad-r:lareqa-{query_lang}", split="test", corpus=corpus, queries=queries,
        qrels=qrels,
        sources={"queries": str(qf.path),
                 "corpus": ", ".join(str(f.path) for f in files.values()),
                 "qrels": "the sentence holding each answer_start, in every pool language"},
        report=cross_check(corpus, queries, qrels),
    )
