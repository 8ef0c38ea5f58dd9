"""Systems trained with several seeds, paired tests between them, and a student's share of the
init-to-teacher gap.

A seeded system is the list of its per-seed runs. Its metric is the mean over seeds (with the
sample standard deviation and each seed's value); two systems are compared by a paired t-test
over the judged queries on per-query scores averaged across each system's seeds (the seed
studies' protocol: a query's score is what the recipe gives it on average).
"""

from __future__ import annotations

import math
from typing import Any

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
