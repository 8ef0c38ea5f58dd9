"""Metrics through ranx against hand-computed values, and the BEIR identical-id flag."""

from __future__ import annotations

import math

import pytest

from retrieval_kd.eval.metrics import evaluate_run

QRELS = {"q1": {"a": 1, "c": 2}, "q2": {"x": 1}}


def _dcg(gains):
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_ndcg_mrr_recall_match_hand_computation():
    run = {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"y": 2.0, "x": 1.0}}
    m = evaluate_run(QRELS, run, ["ndcg@10", "mrr@10", "recall@1"], ignore_identical_ids=False)
    ndcg_q1 = _dcg([0, 1, 2]) / _dcg([2, 1])
    ndcg_q2 = _dcg([0, 1]) / _dcg([1])
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-9)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall@1"] == pytest.approx(0.0)


def test_judged_query_missing_from_run_scores_zero():
    run = {"q1": {"c": 1.0, "a": 0.5}}
    m = evaluate_run(QRELS, run, ["ndcg@10"], ignore_identical_ids=False)
    assert m["ndcg@10"] == pytest.approx(0.5)


def test_ignore_identical_ids_drops_self_hits():
    qrels = {"q1": {"a": 1}}
    run = {"q1": {"q1": 9.0, "a": 1.0}}
    kept = evaluate_run(qrels, run, ["mrr@10"], ignore_identical_ids=False)
    dropped = evaluate_run(qrels, run, ["mrr@10"], ignore_identical_ids=True)
    assert kept["mrr@10"] == pytest.approx(0.5)
    assert dropped["mrr@10"] == pytest.approx(1.0)


def test_per_query_values():
    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0}}
    pq = evaluate_run(QRELS, run, ["recall@10"], per_query=True)
    assert pq["recall@10"] == {"q1": pytest.approx(0.5), "q2": pytest.approx(1.0)}
