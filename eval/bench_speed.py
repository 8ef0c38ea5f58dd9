"""Inference speed, side by side: retrieval-kd's paths against plain sentence-transformers.

One process, the same SciFact test inputs for every contender (``--limit-docs`` / ``--limit-queries``
for quick runs; quality columns then say "subset"):

1. Dense encoding, docs/s: ``SentenceTransformer.encode`` at its defaults (minilm-l6 from the model
   registry) vs ``DenseEncoder.encode_docs`` on each backend / variant (torch fp32, onnx fp32 / O1 /
   O2 / O3 / int8, openvino fp32 and bf16 if it imports; ``--variants`` picks), with each one's nDCG@10 of
   exact search and its difference from torch fp32 (within 0.005?).
2. Teacher scoring, pairs/s, on the BM25 top-20 of the test queries: ``CrossEncoder.predict`` vs
   ``CrossEncoderTeacher`` (float32, each backend) on a stand-in cross-encoder (minilm-l6 body, seeded
   random 1-logit head: eval/bench_score.py's ``make_cross_encoder``; speed and agreement with fp32
   only), and ``BiEncoderTeacher`` (minilm-l6) vs a plain per-query encode + ``cos_sim`` loop, with
   the rerank's nDCG@10 per variant.
3. ColBERT QPS exact vs plaid from eval/results/bench-colbert-engines.json (``--colbert``: measured
   now by eval/bench_colbert_engines.py's functions). 4. The main job's stages from
   runs/scifact/run.json (wall s, CPU s, status, peak RSS).

Method: contenders alternate in rounds (A, B, C, A, B, C ... ``--rounds``) so a busy machine slows
all alike; an untimed warm-up call on the first 64 items comes first; rates are items / median
seconds, per CPU-second (``time.process_time``, all threads) and per wall second; ratios are ours /
plain from this one run. torch, ONNX Runtime and OpenVINO get the same thread count (``--threads``,
default all cores). Loading and ONNX exports (cached in $RKD_CACHE/exports) are not timed. The json
records the environment (versions, CPU, cores, date, git commit) and every round's seconds.

    python -m eval.bench_speed                        # -> eval/results/bench-speed.{json,md}
    python -m eval.bench_speed --limit-docs 300 --limit-queries 20 --rounds 1 --out /tmp/bs
    python -m eval.bench_speed --variants torch:fp32,onnx:O3,onnx:int8
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results"
TOL, DEPTH, WARM = 0.005, 20, 64
PLAIN, REF = "plain", "rkd torch float32"
PLAIN_BF16 = "plain bf16"
"""``CrossEncoder.predict`` with bfloat16 weights: the like-for-like baseline of bf16 contenders."""
PLAIN_INT8 = "plain int8"
"""``CrossEncoder.predict`` after PyTorch's dynamic int8 quantisation of every ``nn.Linear``
(``torch.ao.quantization.quantize_dynamic``): the like-for-like baseline of int8 contenders."""
BASELINE_NAMES = {PLAIN: "plain (ST defaults)", PLAIN_BF16: "plain bf16 (ST, bfloat16 weights)",
                  PLAIN_INT8: "plain int8 (ST, torch dynamic int8 linears)"}
Variants = list[tuple[str, str]]


def all_variants() -> Variants:
    ov = [("openvino", "fp32"), ("openvino", "bf16")] if importlib.util.find_spec("openvino") else []
    return [("torch", "fp32")] + [("onnx", v) for v in ("fp32", "O1", "O2", "O3", "int8")] + ov


def alternate(fns: dict[str, Callable[[Sequence], Any]], items: Sequence, rounds: int) -> tuple[dict, dict]:
    """Time each contender on ``items``, alternating for ``rounds``: (rates, round-1 outputs)."""
    for f in fns.values():
        f(items[:WARM])  # warm-up, untimed
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for _ in range(rounds):
        for k, f in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            y = f(items)
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - t0)
            outs.setdefault(k, y)
    n = len(items)
    rates = {k: {"per_cpu_s": n / statistics.median(cpu[k]), "per_wall_s": n / statistics.median(wall[k]),
                 "cpu_s": np.round(cpu[k], 3).tolist(), "wall_s": np.round(wall[k], 3).tolist()} for k in fns}
    for r in rates.values():
        r["x_plain_cpu"] = r["per_cpu_s"] / rates[PLAIN]["per_cpu_s"]
        r["x_plain_wall"] = r["per_wall_s"] / rates[PLAIN]["per_wall_s"]
    return rates, outs


def build(plain: Callable[[], Any], ours: Callable[[str, str], Any], variants: Variants) -> tuple[dict, dict]:
    """Construct the contenders (exports happen here); a backend that fails is recorded, not fatal."""
    from retrieval_kd.models.backends import label

    makers = {PLAIN: plain, **{f"rkd {label(b, v)}": (lambda b=b, v=v: ours(b, v)) for b, v in variants}}
    built, failed = {}, {}
    for name, make in makers.items():
        try:
            built[name] = make()
        except Exception as e:  # reported in the table
            failed[name] = f"{type(e).__name__}: {' '.join(str(e).split())[:240]}"
            print(f"{name}: FAILED {failed[name]}", file=sys.stderr, flush=True)
    return built, failed


def with_quality(rates: dict, qrels: dict, runs: dict[str, dict]) -> dict:
    """Each contender's nDCG@10 (``evaluate_run``), its difference from torch fp32, within TOL?"""
    from retrieval_kd.eval.metrics import evaluate_run

    for k, r in rates.items():
        r["ndcg@10"] = evaluate_run(qrels, runs[k], ("ndcg@10",))["ndcg@10"]
    for r in rates.values():
        if REF in rates:
            r["delta_vs_torch_fp32"] = r["ndcg@10"] - rates[REF]["ndcg@10"]
            r["within_tol"] = abs(r["delta_vs_torch_fp32"]) <= TOL
    return rates


def dense_section(ds, qids: list[str], doc_ids: list[str], rounds: int, variants: Variants) -> dict:
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.index.encoders import DenseEncoder, DenseParams
    from retrieval_kd.models.load import load_st_model
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.retrieve.topk import topk_run

    ref = resolve_model("minilm-l6")
    models, failed = build(lambda: load_st_model(SentenceTransformer, ref, "the plain baseline"),
                           lambda b, v: DenseEncoder(ref, DenseParams(backend=b, variant=v)), variants)
    fns = {k: m.encode if k == PLAIN else (lambda t, m=m: m.encode_docs(list(t))["emb"])
           for k, m in models.items()}
    rates, outs = alternate(fns, [ds.corpus.docs[d].joined() for d in doc_ids], rounds)
    qtexts, runs = [ds.queries.texts[q] for q in qids], {}
    for k, m in models.items():
        d = np.asarray(outs[k], dtype=np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)  # plain encode leaves normalising to the caller
        q = m.encode(qtexts, normalize_embeddings=True) if k == PLAIN else m.encode_queries(qtexts)
        runs[k] = topk_run(doc_ids, d, qids, np.asarray(q, np.float32), 100)
    rows = with_quality(rates, {q: ds.qrels[q] for q in qids}, runs)
    return {"docs": len(doc_ids), "queries": len(qids), "rows": rows, "failed": failed,
            "backends": {k: m.backend for k, m in models.items() if k != PLAIN},
            "plain_max_seq_length": models[PLAIN].max_seq_length}


def bm25_pairs(ds, qids: list[str]) -> tuple[list, dict]:
    """BM25 top-``DEPTH`` of each query (the package's bm25s first stage over the full corpus)."""
    from retrieval_kd.data.trec import sorted_hits
    from retrieval_kd.data.types import Queries
    from retrieval_kd.retrieve.bm25 import bm25_search
    from retrieval_kd.teachers.base import Pair

    run = bm25_search(ds.corpus, Queries({q: ds.queries.texts[q] for q in qids}), k=DEPTH)
    return [Pair(q, d, ds.queries.texts[q], ds.corpus.docs[d].joined())
            for q in qids for d, _ in sorted_hits(run[q])], run


def like_for_like(contender: str) -> str:
    """The plain baseline of the same precision: ``PLAIN_BF16`` for a bfloat16 contender,
    ``PLAIN_INT8`` for an int8 one, else ``PLAIN``."""
    if "bf16" in contender or "bfloat16" in contender:
        return PLAIN_BF16
    return PLAIN_INT8 if "int8" in contender else PLAIN


def plain_int8(path: str) -> Any:
    """The plain library's own int8: ``CrossEncoder`` with its linear layers dynamically quantised."""
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(path)
    torch.ao.quantization.quantize_dynamic(ce, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return ce


def agreement(pairs: list, a: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Against the fp32 scores: max |diff|, mean per-query Spearman, share of identical orderings."""
    from scipy.stats import spearmanr

    a, ref = np.asarray(a, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    same, rho, i = [], [], 0
    for _, grp in groupby(pairs, key=lambda p: p.qid):
        j = i + len(list(grp))
        same.append(np.array_equal(np.argsort(-a[i:j], kind="stable"), np.argsort(-ref[i:j], kind="stable")))
        if j - i > 1:
            rho.append(float(spearmanr(a[i:j], ref[i:j]).statistic))
        i = j
    return {"max_abs_diff": float(np.max(np.abs(a - ref))), "spearman": float(np.nanmean(rho)),
            "identical_orderings": float(np.mean(same))}


def teacher_section(ds, qids: list[str], rounds: int, threads: int, variants: Variants) -> dict:
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer, util

    from eval.bench_score import make_cross_encoder
    from retrieval_kd.cpu import cpu_has_bf16
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.models.load import load_st_model
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.teachers.cross_encoder import CrossEncoderTeacher
    from retrieval_kd.teachers.encoders import BiEncoderTeacher

    pairs, bm25 = bm25_pairs(ds, qids)
    qrels = {q: ds.qrels[q] for q in qids}
    res: dict[str, Any] = {"pairs": len(pairs), "queries": len(qids), "depth": DEPTH,
                           "bm25_ndcg@10": evaluate_run(qrels, bm25, ("ndcg@10",))["ndcg@10"]}
    path, ident = str(make_cross_encoder()), torch.nn.Identity()
    ces, failed = build(lambda: CrossEncoder(path), lambda b, v: CrossEncoderTeacher(
        path, max_length=512, dtype="float32", threads=threads, backend=b, variant=v), variants)
    # like for like for the bf16 contenders: the plain library with bfloat16 weights, where bf16 is
    # native or a bf16 contender runs (elsewhere torch emulates bf16: slow, and nothing to compare)
    if cpu_has_bf16() or any(like_for_like(k) == PLAIN_BF16 for k in ces):
        try:
            ces[PLAIN_BF16] = CrossEncoder(path, model_kwargs={"dtype": torch.bfloat16})
            ces["rkd torch bfloat16"] = CrossEncoderTeacher(path, max_length=512, dtype="bfloat16",
                                                            threads=threads)
        except Exception as e:  # reported in the table
            failed[PLAIN_BF16] = f"{type(e).__name__}: {' '.join(str(e).split())[:240]}"
    if any(like_for_like(k) == PLAIN_INT8 for k in ces):
        try:  # like for like for the int8 contenders: the plain library, linears in dynamic int8
            ces[PLAIN_INT8] = plain_int8(path)
        except Exception as e:  # reported in the table
            failed[PLAIN_INT8] = f"{type(e).__name__}: {' '.join(str(e).split())[:240]}"
    fns = {k: m.score if not k.startswith(PLAIN) else (lambda ps, m=m: m.predict(
        [(p.query, p.passage) for p in ps], activation_fn=ident, show_progress_bar=False))
           for k, m in ces.items()}
    rates, outs = alternate(fns, pairs, rounds)
    for k, r in rates.items():
        r.update(agreement(pairs, outs[k], outs[REF]) if REF in outs else {})
        same = like_for_like(k) if like_for_like(k) in rates else PLAIN
        r["like_for_like"] = same
        r["x_like_cpu"] = r["per_cpu_s"] / rates[same]["per_cpu_s"]
        r["x_like_wall"] = r["per_wall_s"] / rates[same]["per_wall_s"]
    res["cross_encoder"] = {"rows": rates, "failed": failed, "model": path,
                            "plain_max_length": ces[PLAIN].max_seq_length}
    del ces, fns, outs
    gc.collect()
    ref = resolve_model("minilm-l6")
    bis, failed = build(lambda: load_st_model(SentenceTransformer, ref, "the plain baseline"), lambda b, v:
                        BiEncoderTeacher("minilm-l6", threads=threads, backend=b, variant=v), variants)

    def plain_loop(ps: Sequence) -> np.ndarray:  # what a user writes: per query, encode and cosine
        st = bis[PLAIN]
        return np.concatenate([util.cos_sim(st.encode([q]), st.encode([p.passage for p in g]))[0].numpy()
                               for q, g in ((q, list(g)) for q, g in groupby(ps, key=lambda p: p.query))])

    def fresh(t: BiEncoderTeacher) -> Callable[[Sequence], np.ndarray]:
        def score(ps: Sequence) -> np.ndarray:
            t._q, t._d = type(t._q)(), type(t._d)()  # drop the cross-call cache: every round encodes
            return t.score(list(ps))
        return score

    fns = {k: plain_loop if k == PLAIN else fresh(m) for k, m in bis.items()}
    rates, outs = alternate(fns, pairs, rounds)
    runs: dict[str, dict[str, dict[str, float]]] = {k: {} for k in outs}
    for k, scores in outs.items():
        for p, s in zip(pairs, np.asarray(scores, np.float64).ravel()):
            runs[k].setdefault(p.qid, {})[p.docid] = float(s)
    res["bi_encoder"] = {"rows": with_quality(rates, qrels, runs), "failed": failed}
    return res


def colbert_section(measure: bool, rounds: int) -> dict:
    src = OUT / "bench-colbert-engines.json"
    rel = os.path.relpath(src, ROOT)
    if measure:
        from eval import bench_colbert_engines as bce

        model = bce.default_model()
        tag = Path(model).parent.name
        paths = bce.build(model, "scifact", tag, False, (32, 128))  # that script's default lengths
        return {"source": f"measured now by eval/bench_colbert_engines.py (k=100, {rounds} rounds)",
                "rows": {tag: bce.compare(paths, "scifact", "test", 100, rounds)}}
    if not src.is_file():
        return {"source": f"{rel} is missing (run eval/bench_colbert_engines.py or pass --colbert)"}
    return {"source": rel, "rows": json.loads(src.read_text())}


def run_section(path: Path) -> dict:
    if not path.is_file():
        return {"source": f"{os.path.relpath(path, ROOT)} is missing"}
    rec = json.loads(path.read_text())
    stages = [{"id": s["id"], "status": s.get("status"), "wall_s": s.get("wall_s"), "cpu_s": s.get("cpu_s"),
               "peak_rss_mb": (s.get("memory") or {}).get("peak_rss_mb")} for s in rec.get("stages", [])]
    tot = rec.get("totals", {})
    return {"source": os.path.relpath(path, ROOT), "status": rec.get("status"), "started": rec.get("started"),
            "updated": rec.get("updated"), "stages": stages, "wall_s": tot.get("wall_s"),
            "ran": tot.get("ran"), "cached": tot.get("cached"), "peak_rss_mb": tot.get("peak_rss_mb"),
            "stage_wall_s": sum(s["wall_s"] or 0 for s in stages),
            "stage_cpu_s": sum(s["cpu_s"] or 0 for s in stages)}


def environment(threads: int) -> dict:
    import torch

    from retrieval_kd.artifacts import library_versions, now_iso
    from retrieval_kd.cpu import cpu_name

    cpu = cpu_name()
    git = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()
    vers = {"onnxruntime": "absent", "openvino": "absent", **library_versions()}
    return {"date": now_iso(), "git": git, "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "torch_threads": torch.get_num_threads(), "versions": vers}


def _f(x: float | None, nd: int = 1) -> str:
    return "" if x is None else f"{x:,.{nd}f}"


def table(sec: dict, unit: str, extra: list[tuple[str, Callable[[dict], str]]]) -> list[str]:
    head = ["contender", f"{unit}/CPU-s", f"{unit}/s (wall)", "x plain (CPU)", "x plain (wall)"]
    head += [h for h, _ in extra]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for k, r in sec["rows"].items():
        name = BASELINE_NAMES.get(k, k)
        cells = [name, _f(r["per_cpu_s"]), _f(r["per_wall_s"]),
                 f"{r['x_plain_cpu']:.2f}", f"{r['x_plain_wall']:.2f}"] + [fn(r) for _, fn in extra]
        out.append("| " + " | ".join(cells) + " |")
    return out + [f"| {k} | failed: {msg} |" + " |" * (len(head) - 2) for k, msg in sec["failed"].items()]


def markdown(res: dict) -> str:
    env, sub, v = res["environment"], " (subset)" if res["subset"] else "", res["environment"]["versions"]

    def has(key: str, fmt: Callable[[dict], str]) -> Callable[[dict], str]:
        return lambda r: fmt(r) if key in r else ""

    quality = [(f"nDCG@10{sub}", lambda r: f"{r['ndcg@10']:.4f}"),
               ("Δ vs torch fp32", has("within_tol", lambda r: f"{r['delta_vs_torch_fp32']:+.4f}")),
               (f"within {TOL}", has("within_tol", lambda r: "yes" if r["within_tol"] else "**no**"))]
    like = [("x like for like (CPU)", has("x_like_cpu", lambda r: f"**{r['x_like_cpu']:.2f}** vs "
                                          + r["like_for_like"])),
            ("x like for like (wall)", has("x_like_wall", lambda r: f"{r['x_like_wall']:.2f}"))]
    agree = [("max abs diff", has("spearman", lambda r: f"{r['max_abs_diff']:.1e}")),
             ("Spearman/query", has("spearman", lambda r: f"{r['spearman']:.4f}")),
             ("identical top-20 orders", has("spearman", lambda r: f"{r['identical_orderings']:.0%}"))]
    d, t, c, m = res["dense"], res["teachers"], res["colbert"], res["main_job"]
    ce, bi = t["cross_encoder"], t["bi_encoder"]
    lines = ["# Inference speed: retrieval-kd vs plain sentence-transformers", "",
             f"{env['date']}, git {env['git']}; {env['cpu']}, {env['cores']} cores, {env['threads']} threads "
             f"(torch = ONNX Runtime = OpenVINO); torch {v.get('torch')}, sentence-transformers "
             f"{v.get('sentence-transformers')}, onnxruntime {v['onnxruntime']}, openvino {v['openvino']}.",
             "",
             f"One process, same inputs; contenders alternate for {res['rounds']} round(s), median over "
             "rounds, warm-up excluded; rates per CPU-second (process time) and per wall second; "
             f"x plain = ours / plain. Peak RSS: {res['peak_rss_mb']:,} MiB (a section's contenders all "
             "loaded).",
             "",
             f"## 1. Dense encoding (minilm-l6), {d['docs']} SciFact docs{sub}", "",
             "Plain: `SentenceTransformer.encode` at defaults (batch 32, max_seq_length "
             f"{d['plain_max_seq_length']}); ours: `DenseEncoder.encode_docs` (DenseParams defaults, "
             f"batch 64). nDCG@10: exact search over these docs, {d['queries']} test queries{sub}.", "",
             *table(d, "docs", quality), "",
             f"## 2a. Cross-encoder teacher, {t['pairs']} pairs: BM25 top-{t['depth']} of {t['queries']} "
             f"test queries{sub}", "",
             "**Stand-in for speed only**: minilm-l6 body + seeded random 1-logit head (no cross-encoder "
             "weights offline), so no nDCG: only agreement with `rkd torch float32`. Plain: "
             f"`CrossEncoder.predict` at defaults (batch 32, max_length {ce['plain_max_length']}), identity "
             "activation (logits); ours: `CrossEncoderTeacher(dtype='float32', max_length=512)` on each "
             "backend. Like for like = the same precision: a bf16 contender against `plain bf16` "
             "(`CrossEncoder(..., model_kwargs={'dtype': torch.bfloat16}).predict`), an int8 one against "
             "`plain int8` (its `nn.Linear` layers through `torch.ao.quantization.quantize_dynamic`), an "
             "fp32 one against plain.", "",
             *table(ce, "pairs", like + agree), "",
             f"## 2b. Bi-encoder teacher (minilm-l6) scoring the same {t['pairs']} pairs", "",
             "Plain: per query `encode([query])`, `encode(passages)`, `util.cos_sim`; ours: "
             "`BiEncoderTeacher.score` (each distinct text encoded once per call; its cross-call cache is "
             f"cleared before every round). BM25's own order: nDCG@10 {t['bm25_ndcg@10']:.4f}{sub}.", "",
             *table(bi, "pairs", quality), "",
             "## 3. ColBERT search, exact vs plaid", "", f"Source: {c['source']}.", ""]
    if "rows" in c:
        lines += ["| model | exact QPS (CPU) | plaid QPS (CPU) | plaid / exact (CPU) | plaid / exact (wall) "
                  "| ΔnDCG@10 |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {k} | {r['exact']['qps_cpu']} | {r['plaid']['qps_cpu']} | **{r['speedup_cpu']}x** | "
                  f"{r['speedup_wall']}x | {r['ndcg10_delta']:+.4f} |" for k, r in c["rows"].items()]
    lines += ["", "## 4. Main job (SciFact pipeline)", "", f"Source: {m['source']}."]
    if "stages" in m:
        peak = f"{m['peak_rss_mb'] / 1024:.2f} GiB" if m.get("peak_rss_mb") else "not recorded in run.json"
        lines += [f"Status {m['status']}, started {m['started']}, updated {m['updated']}. Last invocation: "
                  f"{m['ran']} stages ran, {m['cached']} cached, wall {_f(m['wall_s'])} s, peak RSS {peak}. "
                  "The total row sums each stage's own record (a cached one's: from the run that made it).",
                  "", "| stage | status | wall s | CPU s | peak RSS MiB |", "|---|---|---:|---:|---:|"]
        lines += [f"| {s['id']} | {s['status']} | {_f(s['wall_s'])} | {_f(s['cpu_s'])} | "
                  f"{_f(s['peak_rss_mb'], 0)} |" for s in m["stages"]]
        lines.append(f"| **total** | {m['status']} | **{_f(m['stage_wall_s'])}** | "
                     f"**{_f(m['stage_cpu_s'])}** | {_f(m.get('peak_rss_mb'), 0)} |")
    return "\n".join(lines) + "\n"


def common_args(doc: str | None) -> argparse.ArgumentParser:
    """The options every speed benchmark here takes: the SciFact test subset, rounds, threads."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-docs", type=int, help="encode N docs (the chosen queries' relevant ones first)")
    ap.add_argument("--limit-queries", type=int, help="the first N test queries")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return ap


def parse_variants(ap: argparse.ArgumentParser, text: str) -> Variants:
    """``backend:variant,...`` as pairs, each checked (a bad one: the parser's one-line error)."""
    from retrieval_kd.errors import RkdError
    from retrieval_kd.models.backends import check

    out: Variants = []
    for x in text.split(","):
        b, sep, v = x.strip().partition(":")
        try:
            if not sep:
                raise RkdError(f"'{x}' is not backend:variant (e.g. torch:fp32, onnx:int8, openvino:bf16)")
            check(b, v, what="--variants")
        except RkdError as e:
            ap.error(str(e))
        out.append((b, v))
    return out


def scifact_inputs(a: argparse.Namespace) -> tuple[Any, list[str], list[str]]:
    """SciFact test, its judged query ids (the first ``--limit-queries``) and the document ids
    (``--limit-docs``: those queries' relevant documents first, then the corpus order)."""
    from retrieval_kd.data.registry import load_dataset

    ds = load_dataset("scifact", "test")
    qids = [q for q in ds.queries.ids() if q in ds.qrels][:a.limit_queries]
    doc_ids = ds.corpus.ids()
    if a.limit_docs:
        rel = [d for q in qids for d in ds.qrels[q] if d in ds.corpus.docs]
        doc_ids = list(dict.fromkeys(rel + doc_ids))[:a.limit_docs]
    return ds, qids, doc_ids


def record_head(a: argparse.Namespace) -> dict[str, Any]:
    """The start of a result record: environment, rounds, whether a subset ran, the arguments."""
    return {"environment": environment(a.threads), "rounds": a.rounds, "subset": bool(a.limit_docs or a.limit_queries),
            "args": {k: str(x) if isinstance(x, Path) else x for k, x in vars(a).items()}}


def main() -> None:
    ap = common_args(__doc__)
    ap.add_argument("--variants", help="backend:variant,... of ours (default: every one that runs here)")
    ap.add_argument("--colbert", action="store_true", help="measure ColBERT engines now, not read")
    ap.add_argument("--run-json", type=Path, default=ROOT / "runs" / "scifact" / "run.json")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for bench-speed.{json,md}")
    a = ap.parse_args()
    import torch

    from retrieval_kd.artifacts import write_benchmark
    from retrieval_kd.index.stats import peak_rss_mb

    torch.set_num_threads(a.threads)  # ONNX Runtime / OpenVINO sessions take torch's count
    variants = parse_variants(ap, a.variants) if a.variants else all_variants()
    ds, qids, doc_ids = scifact_inputs(a)
    res: dict[str, Any] = {**record_head(a), "variants": variants}
    res["dense"] = dense_section(ds, qids, doc_ids, a.rounds, variants)
    gc.collect()
    res["teachers"] = teacher_section(ds, qids, a.rounds, a.threads, variants)
    res["peak_rss_mb"] = round(peak_rss_mb())  # every contender of a section is loaded at once
    res["colbert"] = colbert_section(a.colbert, a.rounds)
    res["main_job"] = run_section(a.run_json)
    print(write_benchmark(a.out / "bench-speed", res, markdown))


if __name__ == "__main__":
    main()
