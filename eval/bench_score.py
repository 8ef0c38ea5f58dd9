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

    python eval/bench_score.py                      # both parts, writes eval/results/bench-score.*
    python eval/bench_score.py --part throughput --queries 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results"
WORK = ROOT / "runs" / "bench-score"


def bm25_run(split: str = "test"):
    from retrieval_kd.retrieve.stage import bm25_stage
    from retrieval_kd.retrieve.bm25 import BM25Params

    out = WORK / f"bm25-{split}"
    if not (out / "run.trec").is_file():
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
    run = load_trec_run(bm25_run() / "run.trec")
    qids = ds.queries.ids()[:n_queries] if n_queries else ds.queries.ids()
    pairs = [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined())
             for q in qids for d, _ in sorted_hits(run[q])[:depth]]
    texts = [(p.query, p.passage) for p in pairs]
    path = str(make_cross_encoder())
    st = CrossEncoder(path, max_length=512)
    ours = CrossEncoderTeacher(path, max_length=512, batch_size=batch_size)
    warm = texts[:64]
    st.predict(warm, batch_size=batch_size, activation_fn=torch.nn.Identity())
    ours.score(pairs[:64])
    times: dict[str, list[float]] = {"st": [], "rkd": []}
    scores: dict[str, np.ndarray] = {}
    for _ in range(repeats):  # alternate so both see the same machine state
        t0 = time.perf_counter()
        scores["st"] = np.asarray(st.predict(texts, batch_size=batch_size, activation_fn=torch.nn.Identity(),
                                             show_progress_bar=False), dtype=np.float64).ravel()
        times["st"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scores["rkd"] = ours.score(pairs)
        times["rkd"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    pps = {k: len(pairs) / v for k, v in best.items()}
    order = np.argsort(-scores["st"])
    rank_agree = float(np.corrcoef(np.argsort(order), np.argsort(np.argsort(-scores["rkd"])))[0, 1])
    return {
        "pairs": len(pairs), "queries": len(qids), "depth": depth, "batch_size": batch_size,
        "max_length": 512, "dtype": "float32", "threads": torch.get_num_threads(), "repeats": repeats,
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "pairs_per_s": {k: round(v, 1) for k, v in pps.items()},
        "ratio_rkd_over_st": round(pps["rkd"] / pps["st"], 3),
        "max_abs_score_diff": float(np.max(np.abs(scores["st"] - scores["rkd"]))),
        "rank_correlation": round(rank_agree, 6),
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
        if not (sub / "run.trec").is_file():
            sub.mkdir(parents=True, exist_ok=True)
            run = load_trec_run(run_dir / "run.trec")
            write_trec_run({q: h for q, h in run.items() if q in keep}, sub / "run.trec", "bm25")
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

    return load_trec_run(run_dir / "run.trec")


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
    "smollm2-135m (llm yes/no)": {"kind": "llm", "model": "smollm2-135m"},
    "gemma3-270m (llm yes/no)": {"kind": "llm", "model": "gemma3-270m"},
}


def markdown(res: dict) -> str:
    lines = ["# `rkd score` benchmark", ""]
    env = res["environment"]
    lines += [f"Machine: {env['cpu']}, {env['threads']} torch threads; {env['versions']}", ""]
    if "throughput" in res:
        t = res["throughput"]
        lines += ["## Throughput: rkd CrossEncoderTeacher vs sentence-transformers CrossEncoder.predict", "",
                  f"SciFact test, BM25 top-{t['depth']} of {t['queries']} queries = {t['pairs']} pairs; "
                  f"all-MiniLM-L6-v2 body with a random 1-logit head; max_length {t['max_length']}, "
                  f"{t['dtype']}, batch size {t['batch_size']}; best of {t['repeats']} alternating runs.", "",
                  "| scorer | seconds | pairs/s |", "|---|---:|---:|",
                  f"| CrossEncoder.predict | {t['seconds']['st']} | {t['pairs_per_s']['st']} |",
                  f"| rkd score (CrossEncoderTeacher) | {t['seconds']['rkd']} | {t['pairs_per_s']['rkd']} |", "",
                  f"**Ratio rkd / ST: {t['ratio_rkd_over_st']}x**; max |score diff| "
                  f"{t['max_abs_score_diff']:.2e}; rank correlation {t['rank_correlation']}.", ""]
    for key, title in (("quality", "Teachers reranking SciFact test BM25 candidates"),
                       ("llm_quality", "LLM teachers (subset)")):
        if key in res:
            lines += [f"## {title}", "", "| teacher | queries | depth | nDCG@10 | MRR@10 | R@100 | pairs/s | store |",
                      "|---|---:|---:|---:|---:|---:|---:|---|"]
            for name, r in res[key].items():
                m = r["metrics"]
                lines.append(f"| {name} | {r['queries']} | {r['depth']} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                             f"{m['recall@100']:.4f} | {r.get('pairs_per_s') or ''} | {r.get('store_id', '')} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "throughput", "quality", "llm"], default="all")
    ap.add_argument("--queries", type=int, default=None, help="throughput: first N test queries (default all)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rerank-depth", type=int, default=100)
    ap.add_argument("--llm-queries", type=int, default=50)
    ap.add_argument("--llm-depth", type=int, default=20)
    ap.add_argument("--out", default=str(OUT / "bench-score"))
    a = ap.parse_args()
    import torch

    from retrieval_kd.artifacts import library_versions

    out = Path(a.out)
    prior = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    res = dict(prior)
    res["environment"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "versions": library_versions()}
    if a.part in ("all", "throughput"):
        res["throughput"] = throughput(a.queries, a.depth, a.repeats, a.batch_size)
        t = res["throughput"]
        print(f"throughput: ST {t['pairs_per_s']['st']} pairs/s, rkd {t['pairs_per_s']['rkd']} pairs/s, "
              f"ratio {t['ratio_rkd_over_st']}x (max |diff| {t['max_abs_score_diff']:.1e})", flush=True)
    if a.part in ("all", "quality"):
        res["quality"] = rerank_quality({**ENCODERS, **ENSEMBLES}, a.rerank_depth, None)
    if a.part in ("all", "llm"):
        res["llm_quality"] = rerank_quality(LLMS, a.llm_depth, a.llm_queries)
    out.parent.mkdir(parents=True, exist_ok=True)
    from retrieval_kd.artifacts import atomic_write_text, write_json

    write_json(out.with_suffix(".json"), res)
    atomic_write_text(out.with_suffix(".md"), markdown(res))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
