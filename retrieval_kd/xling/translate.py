"""Translate-distill: teacher scores computed on English queries, reused for translated queries.

A score store holds teacher scores for (English query, passage) pairs keyed by query id and
passage id. Given the same queries in another language under the same ids (XQuAD-R and
msmarco-ko keep one id across languages), :func:`translate_join` produces the training rows
(other-language query, passage, teacher score): the teacher never sees the translation, the
student learns to reproduce English-query scores from the translated query.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from retrieval_kd.data.types import Corpus, Dataset, Queries
from retrieval_kd.errors import RkdError

JOIN_SCHEMA = pa.schema([
    pa.field("qid", pa.string(), nullable=False),
    pa.field("query", pa.string(), nullable=False),
    pa.field("docid", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("rank", pa.int32()),
    pa.field("label", pa.int32()),
])
"""Output columns; ``passage`` (string) follows ``docid`` when a corpus is given."""


class IdMismatchError(RkdError):
    """Ids present on one side of a join and absent from the other."""

    def __init__(self, problems: list[tuple[str, list[str]]], examples: int = 5) -> None:
        self.problems = problems
        parts = [f"{len(ids)} {what} (e.g. {', '.join(ids[:examples])})" for what, ids in problems]
        super().__init__("translate_join refused: " + "; ".join(parts))


def _as_table(store_table) -> pa.Table:
    if isinstance(store_table, pa.Table):
        return store_table
    from retrieval_kd.scores.store import ScoreStore

    if isinstance(store_table, ScoreStore):
        return store_table.table()
    if isinstance(store_table, (str, Path)):
        return ScoreStore(Path(store_table)).table()
    raise TypeError(f"expected a pyarrow Table, a ScoreStore or a store path, got {type(store_table)!r}")


def _as_texts(queries) -> Mapping[str, str]:
    if isinstance(queries, Dataset):
        return queries.queries.texts
    if isinstance(queries, Queries):
        return queries.texts
    if isinstance(queries, Mapping):
        return queries
    raise TypeError(f"expected Queries, a Dataset or a mapping qid -> text, got {type(queries)!r}")


def translate_join(store_table, target_queries, corpus: Corpus | Dataset | None = None) -> pa.Table:
    """Join teacher scores with target-language queries by query id.

    ``store_table``: a score table (``qid, docid, score[, rank, label]``), a
    :class:`~retrieval_kd.scores.store.ScoreStore` or its path. ``target_queries``:
    :class:`Queries`, a :class:`Dataset` (its queries) or a mapping qid -> text.
    ``corpus`` (optional): passages to attach as a ``passage`` column (English, or
    translated passages under the same ids).

    Every scored query id must have a target query and every target query must have scores;
    with a corpus, every scored passage id must be in it. Otherwise :class:`IdMismatchError`
    lists how many ids are missing on which side, with examples, and nothing is returned.
    Rows keep the store's order; ``score``, ``rank`` and ``label`` are copied unchanged.
    """
    table = _as_table(store_table)
    for col in ("qid", "docid", "score"):
        if col not in table.column_names:
            raise RkdError(f"translate_join: score table has no '{col}' column "
                           f"(columns: {', '.join(table.column_names)})")
    texts = _as_texts(target_queries)
    docs = corpus.corpus.docs if isinstance(corpus, Dataset) else corpus.docs if corpus else None
    qids = table.column("qid").to_pylist()
    docids = table.column("docid").to_pylist()
    scored = list(dict.fromkeys(qids))
    scored_set = set(scored)
    problems = []
    no_target = [q for q in scored if q not in texts]
    if no_target:
        problems.append(("scored query ids have no target-language query", no_target))
    no_scores = [q for q in texts if q not in scored_set]
    if no_scores:
        problems.append(("target-language queries have no teacher scores", no_scores))
    if docs is not None:
        no_doc = [d for d in dict.fromkeys(docids) if d not in docs]
        if no_doc:
            problems.append(("scored passage ids are absent from the corpus", no_doc))
    if problems:
        raise IdMismatchError(problems)

    n = table.num_rows
    cols = {
        "qid": pa.array(qids, pa.string()),
        "query": pa.array([texts[q] for q in qids], pa.string()),
        "docid": pa.array(docids, pa.string()),
    }
    fields = list(JOIN_SCHEMA)
    if docs is not None:
        cols["passage"] = pa.array([docs[d].joined() for d in docids], pa.string())
        fields.insert(3, pa.field("passage", pa.string(), nullable=False))
    cols["score"] = table.column("score").cast(pa.float64())
    for opt in ("rank", "label"):
        cols[opt] = (table.column(opt).cast(pa.int32()) if opt in table.column_names
                     else pa.nulls(n, pa.int32()))
    return pa.table(cols, schema=pa.schema(fields))


def translate_groups(ds: Dataset, groups: Mapping[str, list], targets: list[Dataset]
                     ) -> tuple[Dataset, dict[str, list]]:
    """Training inputs for Translate-Distill: every scored query of ``ds`` once per target
    dataset, its text taken from that target's query of the same id; candidates, scores, qrels
    and passages are ``ds``'s (the teacher's language). Query ids become ``<qid>@<target name>``.

    Every scored query id must have a query in every target, otherwise :class:`IdMismatchError`
    names the target and the missing ids."""
    problems = [(f"scored query ids have no query in {t.name}/{t.split}", missing)
                for t in targets if (missing := [q for q in groups if q not in t.queries.texts])]
    if problems:
        raise IdMismatchError(problems)
    texts: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    out: dict[str, list] = {}
    for t in targets:
        for q, cands in groups.items():
            new = f"{q}@{t.name}"
            texts[new], out[new] = t.queries.texts[q], cands
            if q in ds.qrels:
                qrels[new] = ds.qrels[q]
    joined = Dataset(name=f"{ds.name} queries from {', '.join(t.name for t in targets)}", split=ds.split,
                     corpus=ds.corpus, queries=Queries(texts), qrels=qrels,
                     sources={**ds.sources, "queries": "; ".join(str(t.sources.get("queries", t.name))
                                                                  for t in targets)},
                     relevance_level=ds.relevance_level)
    return joined, out


def translate_queries(ds: Dataset, targets: list[Dataset]) -> tuple[Dataset, dict[str, str]]:
    """Query-vector distillation (``embed_on: queries``) under ``translate``: every query of every
    target dataset whose id is one of ``ds``'s queries, its text the target's, and (the second
    value) the text of ``ds``'s query of the same id, whose teacher vector it learns. Unlike
    :func:`translate_groups` a target may hold a subset of ``ds``'s ids (English questions alone
    beside a dataset that adds the pool's paragraphs); a target id that ``ds`` lacks is an
    :class:`IdMismatchError`. Query ids become ``<qid>@<target name>``."""
    src = ds.queries.texts
    problems = [(f"query ids of {t.name}/{t.split} have no query in {ds.name}/{ds.split}", missing)
                for t in targets if (missing := [q for q in t.queries.texts if q not in src])]
    if problems:
        raise IdMismatchError(problems)
    texts: dict[str, str] = {}
    sources: dict[str, str] = {}
    for t in targets:
        for q, text in t.queries.texts.items():
            texts[f"{q}@{t.name}"], sources[f"{q}@{t.name}"] = text, src[q]
    joined = Dataset(name=f"{ds.name} queries from {', '.join(t.name for t in targets)}", split=ds.split,
                     corpus=ds.corpus, queries=Queries(texts), qrels={},
                     sources={**ds.sources, "queries": "; ".join(str(t.sources.get("queries", t.name))
                                                                  for t in targets)},
                     relevance_level=ds.relevance_level)
    return joined, sources
