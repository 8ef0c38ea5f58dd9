"""Index benchmark: flat vs HNSW vs IVF-PQ, and SPLADE / ColBERT search cost.

Part ``synthetic``: 1M (``--n``) unit vectors of width 384 from a clustered Gaussian mix
(Zipf-sized clusters; within each cluster an anisotropic, power-law spectrum in a random
rotation, so the data has low intrinsic dimension like real sentence embeddings instead of
being uniformly random), 1000 held-out queries drawn the same way. Exact top-10 comes from
the flat index; HNSW and IVF-PQ report recall@10 against it over a sweep of their search
parameter. QPS is measured the same way for every index: all queries in one batched
``search`` call on one faiss thread, divided by the process CPU time (so it is queries per
core-second, unaffected by other jobs on a shared machine; wall-clock QPS is recorded too).
Single-query latency p50/p95 (wall clock, one thread) is measured on the first
``--latency-queries`` queries, one call each. Builds use all cores; their CPU and wall time
are both recorded. The target (HNSW recall@10 >= 0.98 at >= 5x flat's QPS) is checked at the
smallest efSearch reaching the recall.

Part ``scifact``: SciFact test through the real commands (``rkd index`` / ``rkd search``,
one process each, so peak memory is per command): all-MiniLM-L6-v2 with flat, HNSW and
IVF-PQ (nDCG@10 through each index against the exact flat one, and recall@10 of the flat
top-10), SPLADE-tiny's inverted index (latency, FLOPS) and a ColBERT index. No trained
ColBERT exists yet: the ColBERT row uses all-MiniLM-L6-v2's normalised *token* vectors
(not trained for late interaction), so its quality is a plumbing check, not a ColBERT
result; its latency and size are representative of a 384-d token index.

    python -m eval.bench_index                       # both parts -> eval/results/bench-index.{json,md}
    python -m eval.bench_index --part synthetic --n 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from retrieval_kd.data.runfiles import RUN_FILE

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared machine
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results"
WORK = ROOT / "indexes" / "bench-index"


# -- synthetic ----------------------------------------------------------------------------------
def clustered_mix(n: int, d: int, n_clusters: int, seed: int, decay: float = 0.5,
                  center_scale: float = 1.0, block: int = 100_000) -> np.ndarray:
    """Unit vectors: Zipf-sized Gaussian clusters with a power-law within-cluster spectrum.

    Within-cluster standard deviation along the j-th axis of a random rotation is j^-decay;
    cluster centres are isotropic with the same overall norm times ``center_scale``, so a
    point's nearest neighbours mostly, but not only, share its cluster.
    """
    rng = np.random.default_rng(seed)
    scales = (np.arange(1, d + 1) ** -decay).astype(np.float32)
    rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rot = rot.astype(np.float32)
    noise_norm = float(np.sqrt((scales ** 2).sum()))
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32) * (center_scale * noise_norm / np.sqrt(d))
    p = 1.0 / (np.arange(n_clusters) + 10.0)
    assign = rng.choice(n_clusters, size=n, p=p / p.sum())
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, block):
        m = min(block, n - i)
        z = rng.standard_normal((m, d), dtype=np.float32) * scales
        x = centers[assign[i:i + m]] + z @ rot.T
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)]))


def timed_search(index, q: np.ndarray, k: int, repeats: int = 1) -> tuple[dict[str, float], np.ndarray]:
    """All queries in one call on one faiss thread: QPS by process CPU time and by wall time.

    One thread and CPU time make the figure independent of what else runs on a shared
    machine (and of OpenMP spin-waiting under oversubscription); best of ``repeats``.
    """
    from retrieval_kd.index.faiss_index import _Threads

    cpu = wall = float("inf")
    ids = None
    with _Threads(1):
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            _, ids = index.search(q, k)
            cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - t0)
    return {"qps": round(len(q) / cpu, 1), "qps_wall": round(len(q) / wall, 1)}, ids


def single_latency(index, q: np.ndarray, k: int) -> dict[str, float]:
    """One query per call, one thread: wall-clock p50 / p95 (shared machine: noisy)."""
    from retrieval_kd.index.faiss_index import _Threads
    from retrieval_kd.index.stats import latency_stats

    lat = []
    with _Threads(1):
        for row in q:
            t0 = time.perf_counter()
            index.search(row[None], k)
            lat.append(time.perf_counter() - t0)
    s = latency_stats(lat)
    return {"p50_ms": round(s["p50_ms"], 3), "p95_ms": round(s["p95_ms"], 3), "queries": s["queries"]}


def cpu_timer():
    c0, t0 = time.process_time(), time.perf_counter()
    return lambda: {"cpu_s": round(time.process_time() - c0, 1), "wall_s": round(time.perf_counter() - t0, 1)}


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def bench_synthetic(args) -> dict:
    import faiss

    from retrieval_kd.index.faiss_index import FaissParams, build_faiss, prepare_search

    k, d = 10, args.dim
    t0 = time.perf_counter()
    # queries: further points of the same mixture, not in the indexed set
    both = clustered_mix(args.n + args.queries, d, args.clusters, seed=0)
    x, q = both[:args.n], both[args.n:]
    del both
    gen_s = time.perf_counter() - t0
    print(f"data: {x.shape} in {gen_s:.1f}s", flush=True)
    lq = q[:args.latency_queries]
    res: dict = {"data": {"n": args.n, "dim": d, "queries": len(q), "clusters": args.clusters,
                          "spectrum_decay": 0.5, "generate_s": round(gen_s, 1)},
                 "threads": faiss.omp_get_max_threads()}
    def blocks():
        return (x[i:i + 100_000] for i in range(0, len(x), 100_000))

    # flat: exact
    clock = cpu_timer()
    flat, _ = build_faiss(blocks, len(x), d, FaissParams(index="flat"))
    build = clock()
    speed, truth = timed_search(flat, q, k)
    flat_qps = speed["qps"]
    res["flat"] = {"build": build, "bytes": index_bytes(flat), **speed,
                   "recall@10": 1.0, "latency": single_latency(flat, lq[:args.latency_queries // 2], k)}
    print("flat", res["flat"], flush=True)
    del flat

    # HNSW (multi-threaded build: timing-dependent graph, reported as such)
    hp = FaissParams(index="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                     deterministic=False)
    clock = cpu_timer()
    hnsw, _ = build_faiss(blocks, len(x), d, hp)
    build = clock()
    print(f"hnsw built: {build}", flush=True)
    sweep = []
    for ef in args.ef_search:
        idx = prepare_search(hnsw, hp.model_copy(update={"ef_search": ef}))
        speed, ids = timed_search(idx, q, k, repeats=2)
        row = {"ef_search": ef, "recall@10": round(recall_at(ids, truth), 4), **speed,
               "speedup_vs_flat": round(speed["qps"] / flat_qps, 2)}
        sweep.append(row)
        print("hnsw", row, flush=True)
    ok = [r for r in sweep if r["recall@10"] >= 0.98]
    chosen = ok[0] if ok else max(sweep, key=lambda r: r["recall@10"])
    prepare_search(hnsw, hp.model_copy(update={"ef_search": chosen["ef_search"]}))
    res["hnsw"] = {"M": args.hnsw_m, "ef_construction": args.ef_construction, "build": build,
                   "build_threads": faiss.omp_get_max_threads(), "deterministic_build": False,
                   "bytes": index_bytes(hnsw), "sweep": sweep, "chosen": chosen,
                   "latency_at_chosen": single_latency(hnsw, lq, k)}
    res["target"] = {"rule": "HNSW recall@10 >= 0.98 (flat = 1.0) at >= 5x flat QPS",
                     "met": bool(ok and chosen["qps"] >= 5 * flat_qps), "ef_search": chosen["ef_search"],
                     "recall@10": chosen["recall@10"], "speedup": chosen["speedup_vs_flat"]}
    del hnsw

    # IVF-PQ
    ip = FaissParams(index="ivfpq", nlist=args.nlist, pq_m=args.pq_m, pq_nbits=8, train_size=args.train_size)
    clock = cpu_timer()
    ivf, ip = build_faiss(blocks, len(x), d, ip)
    build = clock()
    print(f"ivfpq built: {build}", flush=True)
    sweep = []
    for nprobe in args.nprobe:
        idx = prepare_search(ivf, ip.model_copy(update={"nprobe": nprobe}))
        speed, ids = timed_search(idx, q, k, repeats=2)
        row = {"nprobe": nprobe, "recall@10": round(recall_at(ids, truth), 4), **speed,
               "speedup_vs_flat": round(speed["qps"] / flat_qps, 2)}
        sweep.append(row)
        print("ivfpq", row, flush=True)
    res["ivfpq"] = {"nlist": ip.nlist, "pq_m": ip.pq_m, "pq_nbits": ip.pq_nbits, "train_size": ip.train_size,
                    "build": build, "bytes": index_bytes(ivf), "sweep": sweep}
    return res


# -- SciFact ------------------------------------------------------------------------------------
def rkd(*args: str) -> None:
    cmd = [sys.executable, "-m", "retrieval_kd.cli.main", *args]
    print("$ rkd " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def read(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def top10(run: dict) -> dict[str, list[str]]:
    return {q: sorted(h, key=lambda d: -h[d])[:10] for q, h in run.items()}


def bench_scifact(args) -> dict:
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.eval.metrics import evaluate_run

    ds = load_dataset("scifact", "test")
    WORK.mkdir(parents=True, exist_ok=True)
    work = WORK / "minilm-chunks"
    rows, exact = [], None
    systems = [
        ("dense", "flat", ["-m", "minilm-l6", "--index", "flat"], []),
        ("dense", "hnsw", ["-m", "minilm-l6", "--index", "hnsw", "--hnsw-m", "32", "--ef-construction", "200"],
         ["--ef-search", "128"]),
        ("dense", "ivfpq", ["-m", "minilm-l6", "--index", "ivfpq", "--pq-m", "48"], ["--nprobe", "16"]),
        ("splade", "splade-tiny", ["-m", "splade-tiny"], []),
        ("colbert", "colbert", ["-m", "minilm-l6", "--document-length", "180", "--query-length", "32",
                                "--nlist", "1024"],
         ["--k-token", "32", "--nprobe", "16"]),
    ]
    for family, name, build, search in systems:
        idx, run = WORK / name, WORK / f"run-{name}"
        # the three dense indexes share one encoding of the corpus
        extra = ["--work-dir", str(work), "--keep-work", "--chunk-size", "1024"] if family == "dense" else []
        rkd("index", family, "-d", "scifact", "-o", str(idx), *build, *extra)
        rkd("search", str(idx), "-d", "scifact", "-s", "test", "-o", str(run), "-k", "100", *search)
        im, rm = read(idx), read(run)
        trec = load_trec_run(run / RUN_FILE)
        m = evaluate_run(ds.qrels, trec, ["ndcg@10", "recall@100"])
        if name == "flat":
            exact = top10(trec)
        mine = top10(trec)
        lat = rm["stats"]["latency"]
        row = {"system": name, "family": family, "build": build + extra, "search": search,
               "ndcg@10": round(m["ndcg@10"], 4), "recall@100": round(m["recall@100"], 4),
               "overlap@10_vs_flat": round(float(np.mean([len(set(mine[q]) & set(exact[q])) / 10
                                                          for q in exact])), 4) if family == "dense" else None,
               "index_mib": round(im["stats"]["index_bytes"] / 2**20, 2),
               "build_s": im["timings_s"].get("build_s"), "encode_docs_s": im["timings_s"].get("encode_docs_s"),
               "encode_chunks": im["stats"]["encode"],
               "build_peak_rss_mib": round(im["stats"]["peak_rss_mb"]),
               "search_peak_rss_mib": round(rm["stats"]["peak_rss_mb"]),
               "p50_ms": round(lat["p50_ms"], 3), "p95_ms": round(lat["p95_ms"], 3), "qps": round(lat["qps"], 1),
               "query_encode_ms": round(rm["stats"]["query_encode_ms_mean"], 2)}
        for key in ("flops", "avg_postings", "avg_query_terms", "avg_candidates", "avg_query_tokens"):
            if key in rm["stats"]:
                row[key] = round(rm["stats"][key], 2)
        if family == "colbert":
            row["note"] = ("all-MiniLM-L6-v2 token vectors, not trained for late interaction "
                           "(no ColBERT student yet): quality is not a ColBERT result")
            row["n_tokens"] = im["stats"]["n_tokens"]
        rows.append(row)
        print(row, flush=True)
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return {"dataset": ds.protocol(), "k": 100, "rows": rows}


# -- report -------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    out = ["# Index benchmark", "", (f"Machine: {res['machine']['cpus']} CPUs ({res['machine']['platform']}), "
           f"load average at start {res['machine']['load_start']}, at end {res['machine'].get('load_end')} "
           "(the machine is shared: absolute timings are noisy, ratios measured back to back less so); "
           f"whole run {res['machine'].get('wall_s', '?')} s wall."), ""]
    s = res.get("synthetic")
    if s:
        d = s["data"]
        out += [f"## Synthetic: {d['n']:,} x {d['dim']} clustered Gaussian mix, {d['queries']} queries, top-10",
                "", ("QPS: all queries in one batched call on one faiss thread, per CPU-second (wall-clock "
                     "QPS beside it: the machine is shared). Builds on "
                     f"{s['threads']} threads, CPU / wall seconds. Recall@10 against the flat (exact) top-10."), "",
                "| index | params | recall@10 | QPS (1 core) | x flat | wall QPS | build CPU s / wall s | size MiB |",
                "|---|---|---|---|---|---|---|---|"]
        f = s["flat"]
        def b(x):
            return f"{x['build']['cpu_s']} / {x['build']['wall_s']}"
        out.append(f"| flat | - | 1.0 | {f['qps']:,.0f} | 1.0 | {f['qps_wall']:,.0f} | {b(f)} | "
                   f"{f['bytes'] / 2**20:,.0f} |")
        h = s["hnsw"]
        for r in h["sweep"]:
            out.append(f"| HNSW | M={h['M']}, efC={h['ef_construction']}, efSearch={r['ef_search']} | "
                       f"{r['recall@10']} | {r['qps']:,.0f} | {r['speedup_vs_flat']} | {r['qps_wall']:,.0f} | {b(h)} | "
                       f"{h['bytes'] / 2**20:,.0f} |")
        v = s["ivfpq"]
        for r in v["sweep"]:
            out.append(f"| IVF-PQ | nlist={v['nlist']}, m={v['pq_m']}x8b, nprobe={r['nprobe']} | "
                       f"{r['recall@10']} | {r['qps']:,.0f} | {r['speedup_vs_flat']} | {r['qps_wall']:,.0f} | {b(v)} | "
                       f"{v['bytes'] / 2**20:,.0f} |")
        out.append("")
        out.append("IVF-PQ returns PQ-approximated scores with no exact re-ranking, so its recall is bounded by "
                   f"the {v['pq_m']}-byte codes ({4 * d['dim'] // v['pq_m']}x smaller than the vectors), "
                   "whatever nprobe.")
        t = s["target"]
        out += ["", (f"Target ({t['rule']}): **{'met' if t['met'] else 'NOT met'}** at efSearch={t['ef_search']} "
                f"(recall@10 {t['recall@10']}, {t['speedup']}x flat QPS)."),
                (f"Single-query latency: flat p50 {f['latency']['p50_ms']} ms / p95 {f['latency']['p95_ms']} ms; "
                f"HNSW (efSearch={t['ef_search']}) p50 {h['latency_at_chosen']['p50_ms']} ms / "
                f"p95 {h['latency_at_chosen']['p95_ms']} ms."),
                ("HNSW was built multi-threaded (`deterministic=False`; the CLI default builds single-threaded "
                "for a reproducible graph).")]
    sf = res.get("scifact")
    if sf:
        out += ["", (f"## SciFact test ({sf['dataset']['n_docs']:,} docs, {sf['dataset']['n_queries']} queries), "
                "through `rkd index` / `rkd search`"), "",
                "Latency: search only, one query at a time on one thread, wall clock (query encoding listed separately).", "",
                ("| system | nDCG@10 | R@100 | top-10 overlap vs flat | p50 ms | p95 ms | QPS | encode ms/q | "
                "index MiB | encode s | build s | peak RSS MiB (build/search) | other |"),
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sf["rows"]:
            other = []
            if "flops" in r:
                other.append(f"FLOPS {r['flops']}, postings/q {r['avg_postings']:,.0f}, "
                             f"terms/q {r['avg_query_terms']}")
            if "avg_candidates" in r:
                other.append(f"candidates/q {r['avg_candidates']:,.0f}, tokens {r['n_tokens']:,}")
            ov = "-" if r["overlap@10_vs_flat"] is None else r["overlap@10_vs_flat"]
            ec = r["encode_chunks"]
            enc = (f"{r['encode_docs_s']}" if not ec["chunks_resumed"] else
                   f"{r['encode_docs_s']} ({ec['chunks_resumed']}/{ec['chunks']} chunks reused)")
            out.append(f"| {r['system']}{' (*)' if r['family'] == 'colbert' else ''} | {r['ndcg@10']} | "
                       f"{r['recall@100']} | {ov} | {r['p50_ms']} | {r['p95_ms']} | {r['qps']:,.1f} | "
                       f"{r['query_encode_ms']} | {r['index_mib']} | {enc} | {r['build_s']} | "
                       f"{r['build_peak_rss_mib']}/{r['search_peak_rss_mib']} | {'; '.join(other)} |")
        out += ["", "(*) " + next((r["note"] for r in sf["rows"] if r["family"] == "colbert"), "")
                + ". Its latency is dominated by the exact MaxSim over every candidate's float16 token "
                "vectors (gathered and widened to float32 per query); PLAID-style centroid pruning is not "
                "implemented."]
        out += ["", ("Peak RSS is each command's own (VmHWM); SPLADE's build peak is the encoder's "
                "batch of vocabulary-wide MLM logits, not the index.")]
    if res.get("notes"):
        out += ["", "## Notes", "", *[f"- {n}" for n in res["notes"]]]
    return "\n".join(out) + "\n"


def render(path: Path) -> None:
    """Re-write the Markdown report from an existing JSON result."""
    from retrieval_kd.artifacts import atomic_write_text

    atomic_write_text(path.with_suffix(".md"), markdown(json.loads(path.with_suffix(".json").read_text())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "synthetic", "scifact"], default="all")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[128, 192, 256, 384, 512])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--pq-m", type=int, default=48)
    ap.add_argument("--train-size", type=int, default=65_536)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--keep", action="store_true", help="Keep the SciFact indexes under indexes/bench-index.")
    ap.add_argument("--out", type=Path, default=OUT / "bench-index")
    ap.add_argument("--note", action="append", default=[], help="A line added to the report (e.g. tuning history).")
    ap.add_argument("--render-only", action="store_true", help="Only rebuild the .md from the .json.")
    args = ap.parse_args()
    if args.render_only:
        render(args.out)
        return

    prev = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").is_file() else {}
    res = {k: v for k, v in prev.items() if k in ("synthetic", "scifact")}
    res["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                      "load_start": [round(v, 1) for v in os.getloadavg()]}
    t0 = time.perf_counter()
    if args.part in ("all", "synthetic"):
        res["synthetic"] = bench_synthetic(args)
    if args.part in ("all", "scifact"):
        res["scifact"] = bench_scifact(args)
    res["machine"]["load_end"] = [round(v, 1) for v in os.getloadavg()]
    res["machine"]["wall_s"] = round(time.perf_counter() - t0, 1)
    from retrieval_kd.artifacts import write_benchmark

    print(write_benchmark(args.out, res, markdown, args.note))


if __name__ == "__main__":
    main()
