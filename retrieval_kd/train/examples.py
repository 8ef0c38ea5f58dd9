"""Training examples from stored teacher scores, candidates and qrels.

One builder feeds every student family: the rows are plain text columns plus a ``label``
column, in the column order Sentence Transformers' losses read (column 0 is the query, then
the passages; ``label`` is taken out by the data collator). Which layout a run uses depends on
its loss(es):

==============  =========================================================  ==========================
layout          columns                                                    label
==============  =========================================================  ==========================
``margin-mse``  query, positive, negative                                  teacher margin s(q,p) - s(q,n)
``kl``          query, passage_1 (the positive), ..., passage_n            [s(q,passage_i) for i in 1..n]
``infonce``     query, positive, negative_1, ..., negative_k               none
``listwise``    query, positive, negative_1, ..., negative_k               [s(q,p), s(q,n_1), ..., s(q,n_k)]
==============  =========================================================  ==========================

``listwise`` is used for weighted combinations (e.g. KL + InfoNCE): the KL loss reads the
scores as a distribution, Margin-MSE turns them into k margins, InfoNCE ignores them.

Positives come from qrels (grade > 0), else from the teacher's top-1. Hard negatives are drawn
from a rank window of the candidate run (the store's ``rank`` column) and, with a teacher,
filtered: a negative whose teacher score is >= positive score - margin is dropped (a likely
false negative). Judged-relevant documents are never negatives. With ``positive_floor`` the
labels are corrected: a qrels positive scored below its row's best negative + the floor is raised
to that score, so the soft labels never put a judged negative at or above the judged positive. A
positive left with too few negatives for its row is skipped, or with ``short_lists="repeat"`` its
row is filled by drawing from its negatives again. Sampling is seeded per (seed, query,
positive), so the same inputs give the same rows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from retrieval_kd.artifacts import sha256_records
from retrieval_kd.data.types import Dataset, Run
from retrieval_kd.errors import RkdError

LAYOUTS = ("margin-mse", "kl", "infonce", "listwise")


@dataclass(frozen=True)
class Cand:
    """One scored candidate of a query."""

    docid: str
    score: float | None
    """Teacher score (None: no teacher, e.g. candidates read from a run for the label-only baseline)."""
    rank: int | None
    """1-based rank in the candidate run; None for a positive forced into the candidates."""


Groups = dict[str, list[Cand]]
"""qid -> its candidates, in candidate order."""


@dataclass(frozen=True)
class ExampleOptions:
    """How rows are built (see :class:`retrieval_kd.train.config.TrainConfig` for each field)."""

    losses: tuple[str, ...] = ("kl",)
    kl_passages: int = 8
    negatives: int = 7
    rank_window: tuple[int, int] = (3, 50)
    filter_margin: float | None = 0.0
    short_lists: str = "drop"
    positives: str = "qrels-then-teacher"
    max_positives: int = 1
    seed: int = 42
    use_teacher: bool = True
    teacher_scale: float = 1.0
    positive_floor: float | None = None

    @classmethod
    def from_config(cls, cfg) -> ExampleOptions:
        return cls(losses=tuple(cfg.score_loss_names), kl_passages=cfg.kl_passages, negatives=cfg.negatives,
                   rank_window=tuple(cfg.rank_window), filter_margin=cfg.filter_margin,
                   short_lists=cfg.short_lists,
                   positives="qrels" if cfg.label_only else cfg.positives,
                   max_positives=cfg.max_positives, seed=cfg.seed, use_teacher=not cfg.label_only,
                   teacher_scale=cfg.teacher_scale, positive_floor=cfg.positive_floor)

    @property
    def layout(self) -> str:
        if len(self.losses) > 1:
            return "listwise"
        return self.losses[0]


@dataclass
class ExampleStats:
    """What the builder did, for the manifest and the CLI."""

    layout: str = ""
    queries: int = 0
    """Queries with at least one row."""
    rows: int = 0
    positives_from_qrels: int = 0
    positives_from_teacher: int = 0
    no_positive: int = 0
    """Queries skipped: no usable positive."""
    unscored_qrels_positives: int = 0
    """Qrels positives without a teacher score (not among the scored candidates)."""
    too_few_negatives: int = 0
    """Positives skipped: fewer negatives left than the layout needs."""
    repeated_negatives: int = 0
    """Negatives drawn a second time to fill short rows (``short_lists="repeat"``)."""
    negatives_in_window: int = 0
    filtered_by_teacher: int = 0
    """Negatives dropped by the teacher filter."""
    corrected_positives: int = 0
    """Rows whose qrels positive was raised in the labels (``positive_floor``)."""
    embed: dict[str, Any] | None = None
    """The ``embed`` targets' teacher and size (:func:`retrieval_kd.train.embed.add_targets`)."""
    fingerprint: str = ""
    """sha256 of every row (texts and labels), in order."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Candidate groups


def groups_from_table(table: pa.Table, *, with_scores: bool = True) -> Groups:
    """Group score-store rows (``qid, docid, score, rank, ...``) by query, keeping row order."""
    out: Groups = {}
    seen: set[tuple[str, str]] = set()
    cols = [table.column(c).to_pylist() for c in ("qid", "docid", "score", "rank")]
    for qid, did, score, rank in zip(*cols):
        if (qid, did) in seen:
            raise RkdError(f"({qid}, {did}) is scored twice across the stores: merge shards with "
                           "`rkd scores merge` or combine teachers with an ensemble")
        seen.add((qid, did))
        out.setdefault(qid, []).append(Cand(did, float(score) if with_scores else None, rank))
    return out


def groups_from_run(ds: Dataset, run: Run, top_k: int) -> Groups:
    """Candidates from a first-stage run (no teacher scores): each query's top-k with ranks."""
    from retrieval_kd.scores.candidates import build_candidates

    out: Groups = {}
    for c in build_candidates(ds, run, top_k):
        out.setdefault(c.qid, []).append(Cand(c.docid, None, c.rank))
    return out


def outside_fold(groups: Groups, fold: tuple[int, int]) -> Groups:
    """The groups of the queries outside fold ``j`` of ``k`` (``fold = (j, k)``; a query's fold is
    ``shard_of(qid, k)``): what fold j's model of a cross-fitted student trains on."""
    from retrieval_kd.scores.candidates import shard_of

    j, k = fold
    return {q: c for q, c in groups.items() if shard_of(q, k) != j}


# ---------------------------------------------------------------------------------------------
# Positives and negatives


def relevant(ds: Dataset, qid: str) -> dict[str, int]:
    """Judged-relevant documents (grade > 0) of a query that exist in the corpus."""
    return {d: g for d, g in ds.qrels.get(qid, {}).items() if g > 0 and d in ds.corpus.docs}


def choose_positives(cands: list[Cand], judged: dict[str, int], opts: ExampleOptions,
                     stats: ExampleStats | None = None) -> list[Cand]:
    """Positives of one query: qrels (best grade, then best teacher score) or the teacher's top-1.

    With a teacher every positive needs a teacher score (the losses and the filter use it).
    """
    by_doc = {c.docid: c for c in cands}
    picked: list[Cand] = []
    if opts.positives in ("qrels", "qrels-then-teacher"):
        usable = []
        for d, g in judged.items():
            c = by_doc.get(d)
            if opts.use_teacher and (c is None or c.score is None):
                if stats is not None:
                    stats.unscored_qrels_positives += 1
                continue
            usable.append((g, c.score if c is not None and c.score is not None else 0.0, d,
                           c or Cand(d, None, None)))
        usable.sort(key=lambda x: (-x[0], -x[1], x[2]))
        picked = [u[3] for u in usable[:opts.max_positives]]
        if stats is not None:
            stats.positives_from_qrels += len(picked)
    if not picked and opts.use_teacher and opts.positives in ("teacher", "qrels-then-teacher"):
        scored = [c for c in cands if c.score is not None]
        if scored:
            picked = [max(scored, key=lambda c: c.score)]
            if stats is not None:
                stats.positives_from_teacher += 1
    return picked


def hard_negatives(cands: list[Cand], positive: Cand, judged: Iterable[str], opts: ExampleOptions,
                   stats: ExampleStats | None = None) -> list[Cand]:
    """Eligible negatives for ``positive``, in candidate order.

    A candidate is eligible if its run rank lies in ``opts.rank_window`` (inclusive), it is not
    the positive nor judged relevant, and (with a teacher and a margin) its teacher score is
    below ``positive.score - filter_margin``.
    """
    lo, hi = opts.rank_window
    skip = set(judged) | {positive.docid}
    out = []
    for c in cands:
        if c.rank is None or not lo <= c.rank <= hi or c.docid in skip:
            continue
        if stats is not None:
            stats.negatives_in_window += 1
        if (opts.use_teacher and opts.filter_margin is not None and positive.score is not None
                and c.score is not None and c.score >= positive.score - opts.filter_margin):
            if stats is not None:
                stats.filtered_by_teacher += 1
            continue
        out.append(c)
    return out


def _rng(seed: int, qid: str, docid: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x1f{qid}\x1f{docid}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def sample(negs: list[Cand], k: int, seed: int, qid: str, pos: str, repeat: bool = False) -> list[Cand]:
    """``k`` of ``negs``, seeded by (seed, query, positive). When there are fewer: all of them, or
    with ``repeat`` all of them plus ``k - len(negs)`` drawn again (with replacement)."""
    if len(negs) < k and repeat and negs:
        return list(negs) + _rng(seed, qid, pos).choices(negs, k=k - len(negs))
    if len(negs) <= k:
        return list(negs)
    return _rng(seed, qid, pos).sample(negs, k)


# ---------------------------------------------------------------------------------------------
# Rows


def corrected_score(pos: Cand, negs: list[Cand], judged: dict[str, int], opts: ExampleOptions,
                    stats: ExampleStats | None = None) -> float | None:
    """The positive's score in the labels: the teacher's, or with ``opts.positive_floor`` and a
    qrels positive, at least the row's best negative + the floor (label correction)."""
    if (opts.positive_floor is None or not opts.use_teacher or pos.score is None
            or pos.docid not in judged or not negs):
        return pos.score
    floor = max(n.score for n in negs) + opts.positive_floor
    if pos.score >= floor:
        return pos.score
    if stats is not None:
        stats.corrected_positives += 1
    return floor


def _needed_negatives(opts: ExampleOptions) -> int:
    layout = opts.layout
    if layout == "kl" or (layout == "listwise" and "kl" in opts.losses):
        return opts.kl_passages - 1
    return opts.negatives


def build_rows(ds: Dataset, groups: Groups, opts: ExampleOptions) -> tuple[dict[str, list], ExampleStats]:
    """Columns (name -> values) of the layout ``opts.layout`` and what was kept or dropped."""
    layout = opts.layout
    if not opts.use_teacher and ("kl" in opts.losses or "margin-mse" in opts.losses):
        raise RkdError(f"loss(es) {'+'.join(opts.losses)} need teacher scores")
    stats = ExampleStats(layout=layout)
    k = _needed_negatives(opts)
    if layout == "margin-mse":
        names = ["query", "positive", "negative", "label"]
    elif layout == "kl":
        names = ["query", *[f"passage_{i}" for i in range(1, k + 2)], "label"]
    elif layout == "infonce":
        names = ["query", "positive", *[f"negative_{i}" for i in range(1, k + 1)]]
    else:
        names = ["query", "positive", *[f"negative_{i}" for i in range(1, k + 1)], "label"]
    cols: dict[str, list] = {n: [] for n in names}
    text = {}

    def passage(d: str) -> str:
        if d not in text:
            text[d] = ds.corpus.docs[d].joined()
        return text[d]

    for qid, cands in groups.items():
        if qid not in ds.queries.texts:
            raise RkdError(f"query '{qid}' of the candidates is not in {ds.name}/{ds.split}")
        judged = relevant(ds, qid)
        positives = choose_positives(cands, judged, opts, stats)
        if not positives:
            stats.no_positive += 1
            continue
        query = ds.queries.texts[qid]
        made = 0
        for pos in positives:
            eligible = hard_negatives(cands, pos, judged, opts, stats)
            negs = sample(eligible, k, opts.seed, qid, pos.docid,
                          repeat=opts.short_lists == "repeat" and layout != "margin-mse")
            stats.repeated_negatives += max(0, len(negs) - len(eligible))
            if not negs or (layout != "margin-mse" and len(negs) < k):
                stats.too_few_negatives += 1
                continue
            pos_score = corrected_score(pos, negs, judged, opts, stats)
            if layout == "margin-mse":
                for n in negs:
                    cols["query"].append(query)
                    cols["positive"].append(passage(pos.docid))
                    cols["negative"].append(passage(n.docid))
                    cols["label"].append(opts.teacher_scale * (pos_score - n.score))
                    made += 1
                continue
            docs = [pos, *negs]
            cols["query"].append(query)
            for name, c in zip(names[1:1 + len(docs)], docs):
                cols[name].append(passage(c.docid))
            if "label" in cols:
                cols["label"].append([opts.teacher_scale * s for s in (pos_score, *(n.score for n in negs))])
            made += 1
        if made:
            stats.queries += 1
            stats.rows += made
    stats.fingerprint = sha256_records(
        (*(str(cols[n][i]) for n in names),) for i in range(len(cols["query"])))
    if not stats.rows:
        stats.notes.append("no rows: check the rank window, the filter margin and the positives")
    return cols, stats


def build_examples(ds: Dataset, groups: Groups, opts: ExampleOptions):
    """Rows as a ``datasets.Dataset`` (columns in the order the losses read them) plus stats.

    Inputs per layout (``label`` is the teacher's, ``s`` its score):

    +------------------------------------------------+----------------------------------------------+
    | Inputs                                         | Labels                                       |
    +================================================+==============================================+
    | (query, positive, negative)  [margin-mse]      | s(query, positive) - s(query, negative)      |
    +------------------------------------------------+----------------------------------------------+
    | (query, passage_1, ..., passage_n)  [kl]       | [s(query, passage_i) for i in 1..n]          |
    +------------------------------------------------+----------------------------------------------+
    | (query, positive, negative_1, ..., negative_k) | none                                         |
    | [infonce]                                      |                                              |
    +------------------------------------------------+----------------------------------------------+
    | (query, positive, negative_1, ..., negative_k) | [s(query, positive), s(query, negative_i)..] |
    | [listwise: weighted combinations]              |                                              |
    +------------------------------------------------+----------------------------------------------+
    """
    from datasets import Dataset as HFDataset

    cols, stats = build_rows(ds, groups, opts)
    return HFDataset.from_dict(cols), stats
