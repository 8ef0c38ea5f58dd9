"""Systems against a baseline: ranx's paired test per query (:func:`significance`, what ``rkd
eval --baseline`` and an unseeded pipeline eval report), systems trained with several seeds and
paired tests between them, and a student's share of the init-to-teacher gap.

A seeded system is the list of its per-seed runs. Its metric is the mean over seeds (with the
sample standard deviation and each seed's value); two systems are compared by a paired t-test
over the judged queries on per-query scores averaged across each system's seeds (the seed
studies' protocol: a query's score is what the recipe gives it on average).
"""

from __future__ import annotations

import math
from typing import Any

from retrieval_kd.data.types import Qrels, Run

STAT_TEST, ALPHA = "student", 0.05
"""The default test of :func:`significance` (ranx's paired Student's t-test) and its level: what
a pipeline eval uses unless it sets ``stat_test`` / ``alpha``, and what ``rkd eval --baseline``
runs."""

STAT_TESTS = {"student": "paired Student's t-test", "fisher": "Fisher's randomisation test",
              "tukey": "Tukey's HSD test"}
"""ranx's ``stat_test`` names, in words."""

PAIRED_TEST = "paired t-test over queries on seed-averaged scores"
"""How :func:`paired_test` on :func:`per_query` scores is named in results and reports."""


def seed_summary(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd (None for one seed) and the values themselves."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "per_seed": list(values), "n_seeds": n}


def paired_test(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Paired t-test of ``a`` against ``b`` over their common queries: mean delta, t, p."""
    from scipy.stats import ttest_rel

    qids = sorted(set(a) & set(b))
    x, y = [a[q] for q in qids], [b[q] for q in qids]
    delta = (sum(x) - sum(y)) / len(qids) if qids else float("nan")
    if len(qids) < 2 or all(u == v for u, v in zip(x, y)):
        return {"delta": delta, "t": None, "p_value": None, "n_queries": len(qids)}
    t = ttest_rel(x, y)
    return {"delta": delta, "t": float(t.statistic), "p_value": float(t.pvalue), "n_queries": len(qids)}


def gap_closed(init: float | None, student: float, teacher: float | None) -> float | None:
    """The share of the init-to-teacher gap the student closed (1.0: at the teacher; None
    where there is no gap to close)."""
    if init is None or teacher is None or teacher <= init:
        return None
    return (student - init) / (teacher - init)


def significance(qrels: Qrels, runs: dict[str, Run], baseline: str, metrics: list[str], *,
                 stat_test: str = STAT_TEST, alpha: float = ALPHA, ignore_identical_ids: bool = True,
                 relevance_level: int = 1) -> dict[str, dict[str, dict[str, Any]]]:
    """Each system against ``baseline`` with ranx's ``compare`` (paired test per query, on the
    same judged-query view and ``relevance_level`` ``evaluate_run`` scores): {system: {metric:
    {p_value, significant, delta}}}."""
    import warnings

    from ranx import compare

    from retrieval_kd.eval.metrics import ranx_metric, ranx_view

    rq, rruns = ranx_view(qrels, runs, ignore_identical_ids=ignore_identical_ids)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        names = {m: ranx_metric(m, relevance_level) for m in metrics}
        rep = compare(rq, rruns, list(names.values()), stat_test=stat_test, max_p=alpha, make_comparable=True)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in runs:
        if name == baseline:
            continue
        out[name] = {}
        for m in metrics:
            c = rep.comparisons[name, baseline][names[m]]
            pv = float(c["p_value"])
            pv = None if math.isnan(pv) else pv  # identical per-query scores: no test (NaN)
            out[name][m] = {"p_value": pv, "significant": bool(c["significant"]) and pv is not None,
                            "delta": float(rep.results[name][names[m]] - rep.results[baseline][names[m]])}
    return out
