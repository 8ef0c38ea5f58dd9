"""Metrics through ranx (which matches trec_eval / pytrec_eval exactly)."""

from __future__ import annotations

from retrieval_kd.data.types import Qrels, Run
from retrieval_kd.errors import RkdError

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map")


def drop_identical_ids(run: Run) -> Run:
    """BEIR's ``ignore_identical_ids``: a document whose id equals the query id is removed."""
    return {q: {d: s for d, s in hits.items() if d != q} for q, hits in run.items()}


def evaluate_run(
    qrels: Qrels,
    run: Run,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    *,
    ignore_identical_ids: bool = True,
    per_query: bool = False,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Mean metrics over the judged queries (a judged query missing from the run scores 0).

    With ``per_query`` the result is ``{metric: {qid: value}}`` instead of means.
    """
    import warnings

    from ranx import Qrels as RQrels
    from ranx import Run as RRun
    from ranx import evaluate

    if ignore_identical_ids:
        run = drop_identical_ids(run)
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    run = {q: dict(run.get(q, {})) for q in judged}
    if not any(run.values()):  # ranx fails on a run with no retrieved document at all
        raise RkdError(f"the run retrieves nothing for any of the {len(judged)} judged queries "
                       "(no query id in common with the qrels: wrong dataset or split?)")
    rq, rr = RQrels(judged), RRun(run)
    with warnings.catch_warnings():  # numba's uint64->int64 cast note on ranx's kernels
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        try:
            out = evaluate(rq, rr, list(metrics), make_comparable=True, return_mean=not per_query)
        except ValueError as e:  # ranx: "Metric X not supported."
            raise RkdError(f"metrics {','.join(metrics)}: {e}") from None
    if not isinstance(out, dict):  # ranx returns a bare value for a single metric
        out = {metrics[0]: out}
    if per_query:
        qids = list(rr.keys())
        return {m: {q: float(v) for q, v in zip(qids, out[m])} for m in metrics}
    return {m: float(out[m]) for m in metrics}
