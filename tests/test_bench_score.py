"""eval/bench_score.py: the LLM grid's arm order and the GGUF speed verdict."""

from __future__ import annotations

import pytest

from eval.bench_score import _gguf_verdict, grid_arms


def test_bench_grid_runs_every_model_at_one_order_before_more_orders():
    arms = grid_arms(["small", "large"], ["pointwise", "listwise"], [3, 1])
    assert [n for n, _ in arms] == ["small (pointwise)", "small (listwise)", "large (pointwise)", "large (listwise)",
                                    "small (listwise, 3 orders)", "large (listwise, 3 orders)"]
    assert arms[-1][1]["orders"] == 3 and "orders" not in arms[1][1] and arms[0][1]["kind"] == "llm"
    assert [n for n, _ in grid_arms(["m"], ["pointwise"], [1, 3])] == ["m (pointwise)"]


def _speed(fp32: float, bf16: float, rho32: float, rho16: float) -> dict:
    return {"ratio_gguf_over_transformers_fp32": fp32, "ratio_gguf_over_transformers_bf16": bf16,
            "scorers": {"transformers float32": {"spearman_vs_gguf": rho32},
                        "transformers bfloat16": {"spearman_vs_gguf": rho16}}}


@pytest.mark.parametrize(("g", "want"), [
    (_speed(3.0, 1.2, 0.96, 0.99), ["float32: met", "bfloat16: not met"]),
    (_speed(4.0, 3.5, 0.94, 0.95), ["float32: not met", "bfloat16: met"]),  # speed alone is not enough
    (_speed(0.38, 0.13, 0.90, 0.89), ["float32: not met", "bfloat16: not met"]),
])
def test_gguf_verdict_needs_both_speed_and_agreement(g, want):
    text = _gguf_verdict(g)
    assert [p.split(" (")[0] for p in text.removeprefix("Target >= 3x with Spearman >= 0.95: ").split("; ")] == want


def _copier_inputs(n_queries: int = 3, n_docs: int = 20):
    from types import SimpleNamespace

    docs = {f"q{i}d{j}": SimpleNamespace(joined=lambda i=i, j=j: f"passage {j} of {i}")
            for i in range(n_queries) for j in range(n_docs)}
    ds = SimpleNamespace(queries=SimpleNamespace(texts={f"q{i}": f"claim {i}" for i in range(n_queries)}),
                         corpus=SimpleNamespace(docs=docs))
    top = {f"q{i}": {f"q{i}d{j}": 100.0 - j for j in range(n_docs)} for i in range(n_queries)}
    return ds, top


def test_copier_at_one_order_is_the_first_stage_order():
    from eval.bench_score import copier_run, same_top10

    ds, top = _copier_inputs()
    run = copier_run(ds, top, 1)
    for q, hits in top.items():
        assert sorted(run[q], key=lambda d: -run[q][d]) == sorted(hits, key=lambda d: -hits[d])
    assert same_top10(run, top) == 1.0


def test_copier_at_three_orders_mixes_in_the_teachers_own_shuffles():
    """Mean rank over the first-stage order and two seeded shuffles: reproducible, not the input
    order, and still leaning to it (the first-stage top passage ranks well above the middle on
    average over queries: its mean rank is about (0 + 9.5 + 9.5) / 3)."""
    from eval.bench_score import copier_run, same_top10

    ds, top = _copier_inputs(n_queries=30)
    run = copier_run(ds, top, 3)
    assert run == copier_run(ds, top, 3)
    assert same_top10(run, top) < 0.5
    places = [sorted(run[q], key=lambda d: -run[q][d]).index(f"{q}d0") for q in top]
    assert sum(places) / len(places) < 7


def test_llm_table_names_the_best_row_that_is_not_its_copier():
    from eval.bench_score import llm_markdown

    def row(ndcg: float, delta_copier: float, p_copier: float | None, store: str) -> dict:
        return {"metrics": {"ndcg@10": ndcg}, "store_id": store, "same_top10_as_copier": 1.0 if p_copier is None else 0.0,
                "vs_chance": {"delta": ndcg - 0.1, "t_p": 0.01}, "vs_bm25": {"delta": ndcg - 0.7, "t_p": 0.5},
                "vs_copier": {"delta": delta_copier, "t_p": p_copier}}

    res = {"llm_teachers": {"queries": 10, "depth": 20, "task": "claim", "chance_seeds": 20, "listwise": {},
                            "rows": {"chance (random order, mean of seeds)": {"metrics": {"ndcg@10": 0.1}},
                                     "a (listwise)": row(0.7, 0.0, None, "s1"),
                                     "b (pointwise)": row(0.45, -0.25, 0.05, "s2"),
                                     "c (pointwise)": row(0.2, -0.5, 0.01, "s3")}}}
    text = "\n".join(llm_markdown(res))
    assert "**Best LLM teacher: a (listwise)" in text
    assert "**Best LLM teacher whose ranking differs from its copier's: b (pointwise), nDCG@10 0.4500" in text
    assert "Rows equal to their copier on every query: a (listwise)." in text
    assert "| a (listwise) | 0.7000 |" in text and "0.0 (equal on every query) | 100% of queries" in text
