"""Typed containers for a retrieval dataset."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from retrieval_kd.artifacts import sha256_records

Qrels = dict[str, dict[str, int]]
"""qid -> {docid: graded relevance}."""

Run = dict[str, dict[str, float]]
"""qid -> {docid: score}; higher is better."""


@dataclass(frozen=True)
class Document:
    text: str
    title: str = ""

    def joined(self, sep: str = " ") -> str:
        """Title and body as one passage, the way BEIR feeds encoders and BM25."""
        return f"{self.title}{sep}{self.text}" if self.title else self.text


class _ById:
    """Entries keyed by id, in file order (``_by_id``: the mapping)."""

    def _by_id(self) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._by_id())

    def ids(self) -> list[str]:
        return list(self._by_id())


@dataclass
class Corpus(_ById):
    """Documents keyed by id, in file order."""

    docs: dict[str, Document]

    def _by_id(self) -> dict[str, Document]:
        return self.docs

    def texts(self, sep: str = " ") -> list[str]:
        return [d.joined(sep) for d in self.docs.values()]

    def absent(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that name no document (an Arrow-backed corpus answers without an id table)."""
        return {i for i in ids if i not in self.docs}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over (id, title, text) of every document, in order."""
        return sha256_records((i, d.title, d.text) for i, d in self.docs.items())


@dataclass
class Queries(_ById):
    """Query texts keyed by id, in file order."""

    texts: dict[str, str]

    def _by_id(self) -> dict[str, str]:
        return self.texts

    @cached_property
    def fingerprint(self) -> str:
        return sha256_records(self.texts.items())


def qrels_fingerprint(qrels: Qrels) -> str:
    return sha256_records(
        (q, d, str(r)) for q in sorted(qrels) for d, r in sorted(qrels[q].items())
    )


@dataclass
class ValidationReport:
    """Cross-reference problems between qrels and corpus / queries (reported, not fatal)."""

    qrels_docs_missing: list[tuple[str, str]] = field(default_factory=list)
    qrels_queries_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.qrels_docs_missing or self.qrels_queries_missing)

    def lines(self, examples: int = 5) -> list[str]:
        out = []
        if self.qrels_docs_missing:
            ex = ", ".join(f"{q}->{d}" for q, d in self.qrels_docs_missing[:examples])
            out.append(
                f"{len(self.qrels_docs_missing)} qrels judgements name documents absent "
                f"from the corpus (e.g. {ex})"
            )
        if self.qrels_queries_missing:
            ex = ", ".join(self.qrels_queries_missing[:examples])
            out.append(
                f"{len(self.qrels_queries_missing)} qrels queries are absent from the "
                f"queries file (e.g. {ex})"
            )
        return out


@dataclass
class Dataset:
    """One split of a dataset: corpus, the split's queries and their qrels."""

    name: str
    split: str
    corpus: Corpus
    queries: Queries
    qrels: Qrels
    sources: dict[str, str] = field(default_factory=dict)
    """Which files (or ids) each part was read from."""
    report: ValidationReport = field(default_factory=ValidationReport)
    relevance_level: int = 1
    """The protocol's lowest grade binary metrics (recall, MAP, MRR, ...) count as relevant
    (2 for TREC DL passage; set from the registry); nDCG uses the grades."""

    @classmethod
    def judged(cls, name: str, split: str, corpus: Corpus, all_queries: Queries, qrels: Qrels,
               sources: dict[str, str]) -> Dataset:
        """A split from files read whole: its queries are those ``qrels`` judge (in qrels order),
        with the qrels checked against the corpus and every query read."""
        return cls(
            name=name,
            split=split,
            corpus=corpus,
            queries=Queries({q: all_queries.texts[q] for q in qrels if q in all_queries.texts}),
            qrels=qrels,
            sources=sources,
            report=cross_check(corpus, all_queries, qrels),
        )

    def protocol(self) -> dict[str, object]:
        """What identifies this split's content, for manifests and result records
        (``relevance_level`` only where it is not the default 1)."""
        return {
            "dataset": self.name,
            "split": self.split,
            "sources": self.sources,
            "n_docs": len(self.corpus),
            "n_queries": len(self.queries),
            "n_judgements": sum(len(v) for v in self.qrels.values()),
            "corpus_sha256": self.corpus.fingerprint,
            "queries_sha256": self.queries.fingerprint,
            "qrels_sha256": qrels_fingerprint(self.qrels),
            **({"relevance_level": self.relevance_level} if self.relevance_level != 1 else {}),
        }


def cross_check(corpus: Corpus, queries: Queries, qrels: Qrels) -> ValidationReport:
    """Find qrels entries whose query or document is not present."""
    rep = ValidationReport()
    absent = corpus.absent({d for judged in qrels.values() for d in judged})
    for qid, judged in qrels.items():
        if qid not in queries.texts:
            rep.qrels_queries_missing.append(qid)
        rep.qrels_docs_missing.extend((qid, d) for d in judged if d in absent)
    return rep
