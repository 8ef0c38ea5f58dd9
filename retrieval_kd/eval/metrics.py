"""Metrics through ranx (which matches trec_eval / pytrec_eval exactly)."""

from __future__ import annotations

import os

from retrieval_kd.data.types import Qrels, Run
from retrieval_kd.errors import RkdError

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map")
BINARY_METRICS = frozenset({"hits", "hit_rate", "precision", "recall", "f1", "r_precision", "mrr", "map", "bpref"})
"""ranx metrics that binarise the grades (``trec_eval -l``); nDCG / DCG use the grades."""


def ranx_metric(metric: str, relevance_level: int = 1) -> str:
    """The ranx name of ``metric`` under a protocol counting grades >= ``relevance_level`` as
    relevant: ``recall@100`` -> ``recall@100-l2`` for a binary metric at level 2; graded
    metrics, level 1 and a name that already gives a level (``-l``) are unchanged."""
    if relevance_level == 1 or "-l" in metric or metric.split("@")[0] not in BINARY_METRICS:
        return metric
    return f"{metric}-l{relevance_level}"


def drop_identical_ids(run: Run) -> Run:
    """BEIR's ``ignore_identical_ids``: a document whose id equals the query id is removed."""
    return {q: {d: s for d, s in hits.items() if d != q} for q, hits in run.items()}


def ranx_view(qrels: Qrels, runs: dict[str, Run], *, ignore_identical_ids: bool = True):
    """ranx's ``Qrels`` of the judged queries and a ``Run`` of each run on exactly those queries
    (a judged query the run misses: an empty ranking, which scores 0).

    ranx pairs the i-th query of the qrels with the i-th query of a run; each is checked to list
    the same queries in the same order, so that a ranx or numba fault which orders them differently
    (seen with numba's on-disk kernel cache: :mod:`retrieval_kd.numba_cache`) is an error, not
    wrong metrics.
    """
    from ranx import Qrels as RQrels
    from ranx import Run as RRun

    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    rq, out = RQrels(judged), []
    order = list(rq.keys())
    for name, run in runs.items():
        label = "the run" if name == "run" else f"run {name!r}"
        if ignore_identical_ids:
            run = drop_identical_ids(run)
        view = {q: dict(run.get(q, {})) for q in judged}
        if not any(view.values()):  # ranx fails on a run with no retrieved document at all
            raise RkdError(f"{label} retrieves nothing for any of the {len(judged)} judged queries "
                           "(no query id in common with the qrels: wrong dataset or split?)")
        rr = RRun(view, name=name)
        if list(rr.keys()) != order:
            raise RkdError(f"{label}: ranx built it and the qrels in different query orders, so its "
                           "metrics would pair one query's judgements with another query's ranking; "
                           "numba's kernel cache is the known cause (NUMBA_CACHE_DIR="
                           f"{os.environ.get('NUMBA_CACHE_DIR', 'unset')}): remove it and run again")
        out.append(rr)
    return rq, out


def evaluate_run(
    qrels: Qrels,
    run: Run,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    *,
    ignore_identical_ids: bool = True,
    per_query: bool = False,
    relevance_level: int = 1,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Mean metrics over the judged queries (a judged query missing from the run scores 0).

    With ``per_query`` the result is ``{metric: {qid: value}}`` instead of means. Binary
    metrics count grades >= ``relevance_level`` as relevant (the dataset's protocol, e.g. 2
    for TREC DL: :attr:`Dataset.relevance_level`); results keep the names asked for.
    """
    import warnings

    from ranx import evaluate

    rq, (rr,) = ranx_view(qrels, {"run": run}, ignore_identical_ids=ignore_identical_ids)
    names = [ranx_metric(m, relevance_level) for m in metrics]
    with warnings.catch_warnings():  # numba's uint64->int64 cast note on ranx's kernels
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        try:
            out = evaluate(rq, rr, names, make_comparable=True, return_mean=not per_query)
        except ValueError as e:  # ranx: "Metric X not supported."
            raise RkdError(f"metrics {','.join(metrics)}: {e}") from None
    if not isinstance(out, dict):  # ranx returns a bare value for a single metric
        out = {names[0]: out}
    if per_query:
        qids = list(rr.keys())
        return {m: {q: float(v) for q, v in zip(qids, out[n])} for m, n in zip(metrics, names)}
    return {m: float(out[n]) for m, n in zip(metrics, names)}
