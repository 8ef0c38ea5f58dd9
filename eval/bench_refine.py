"""IVF-PQ with exact re-ranking (faiss IndexRefine) against flat and plain IVF-PQ.

1M (``--n``) unit vectors of width 128 from the clustered Gaussian mix of
:mod:`eval.bench_index` (Zipf-sized clusters, power-law spectrum; seeded, generated in blocks,
float32), 1000 held-out queries of the same mix. The flat index gives the exact top-10; one
IVF-PQ index is built with the library's defaults (nlist 4*sqrt(N), pq_m dim/8 x 8 bits, the
dense default refine: flat, refine_factor 16), then searched as plain IVF-PQ (its base index
alone, the same codes), refined from the float32 vectors (flat) and from an 8-bit copy (sq8)
over a sweep of nprobe and refine_factor. QPS: all queries in one batched call, single
process, ``--threads`` (2) faiss threads, wall clock (best of 2) and per CPU-second. The target:
recall@10 >= 0.95 at >= 10x flat's QPS, checked at the library defaults.

    python -m eval.bench_refine            # -> eval/results/bench-refine.{json,md}
    python -m eval.bench_refine --n 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results" / "bench-refine"
MIB = 2 ** 20


def timed(index, q: np.ndarray, k: int, repeats: int = 2) -> tuple[dict[str, float], np.ndarray]:
    """All queries in one batched call: wall-clock and CPU-time QPS (best of ``repeats``)."""
    cpu = wall = float("inf")
    ids = None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        _, ids = index.search(q, k)
        cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - t0)
    return {"qps": round(len(q) / wall, 1), "qps_per_cpu_s": round(len(q) / cpu, 1)}, ids


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)]))


def clock():
    c0, t0 = time.process_time(), time.perf_counter()
    return lambda: {"cpu_s": round(time.process_time() - c0, 1), "wall_s": round(time.perf_counter() - t0, 1)}


def bench(args) -> dict:
    import faiss

    from eval.bench_index import clustered_mix
    from retrieval_kd.families import get as get_family
    from retrieval_kd.index.faiss_index import (
        FaissParams,
        build_faiss,
        new_refine_store,
        prepare_search,
        refine_index,
        sample_rows,
        with_refine_default,
    )
    from retrieval_kd.index.stats import peak_rss_mb

    faiss.omp_set_num_threads(args.threads)
    k, d = 10, args.dim
    t = clock()
    both = clustered_mix(args.n + args.queries, d, args.clusters, seed=0)
    x, q = both[:args.n], both[args.n:].copy()
    res: dict = {"data": {"n": args.n, "dim": d, "queries": len(q), "clusters": args.clusters,
                          "bytes": int(x.nbytes), "generate": t()}, "threads": args.threads, "rows": []}
    print("data", res["data"], flush=True)

    def blocks():
        return (x[i:i + 100_000] for i in range(0, len(x), 100_000))

    t = clock()
    flat, _ = build_faiss(blocks, len(x), d, FaissParams(index="flat", device="cpu"))
    build = t()
    speed, truth = timed(flat, q, k)
    flat_qps = speed["qps"]
    res["rows"].append({"index": "flat", "params": "-", "recall@10": 1.0, **speed, "x_flat": 1.0,
                        "bytes": int(flat.ntotal) * d * 4, "build": build})
    print(res["rows"][-1], flush=True)
    del flat

    fp = with_refine_default(FaissParams(index="ivfpq", device="cpu"), get_family("bi-encoder").refine_default)  # the dense defaults
    t = clock()
    index, fp = build_faiss(blocks, len(x), d, fp)
    build = t()
    res["ivfpq"] = {k_: getattr(fp, k_) for k_ in ("nlist", "pq_m", "pq_nbits", "nprobe", "train_size",
                                                  "refine", "refine_factor")}
    res["ivfpq"]["build_with_refine_flat"] = build
    print("ivfpq", res["ivfpq"], flush=True)
    base = faiss.downcast_index(index.base_index)
    base_bytes = int(faiss.serialize_index(base).nbytes)
    flat_store = int(index.ntotal) * d * 4
    t = clock()  # the sq8 copy over the same base
    sq8 = new_refine_store(fp.model_copy(update={"refine": "sq8"}), d)
    sq8.train(sample_rows(blocks, len(x), fp.train_size, fp.seed))
    for b in blocks():
        sq8.add(np.ascontiguousarray(b))
    sq8_index = refine_index(base, sq8, fp.refine_factor)
    res["sq8_store_build"] = t()
    sq8_store = int(sq8.ntotal) * int(sq8.code_size)

    def row(name, params, idx, nbytes, **extra):
        speed, ids = timed(idx, q, k)
        r = {"index": name, "params": params, "recall@10": round(recall_at(ids, truth), 4), **speed,
             "x_flat": round(speed["qps"] / flat_qps, 2), "bytes": nbytes, **extra}
        res["rows"].append(r)
        print(r, flush=True)
        return r

    for nprobe in args.nprobe:
        p = fp.model_copy(update={"nprobe": nprobe})
        faiss.extract_index_ivf(base).nprobe = nprobe
        row("IVF-PQ", f"nprobe={nprobe}", base, base_bytes, nprobe=nprobe, k_factor=None)
        for kf in args.k_factor:
            row("IVF-PQ + refine flat", f"nprobe={nprobe}, k_factor={kf}",
                prepare_search(index, p.model_copy(update={"refine_factor": kf})), base_bytes + flat_store,
                nprobe=nprobe, k_factor=kf, refine="flat")
        for kf in args.k_factor_sq8:
            sq8_index.k_factor = float(kf)
            row("IVF-PQ + refine sq8", f"nprobe={nprobe}, k_factor={kf}", sq8_index, base_bytes + sq8_store,
                nprobe=nprobe, k_factor=kf, refine="sq8")
    default = next(r for r in res["rows"] if r.get("refine") == "flat" and r["nprobe"] == fp.nprobe
                   and r["k_factor"] == fp.refine_factor)
    ok = [r for r in res["rows"] if r.get("k_factor") and r["recall@10"] >= 0.95 and r["x_flat"] >= 10]
    res["target"] = {"rule": "IVF-PQ + refine recall@10 >= 0.95 at >= 10x flat QPS",
                     "defaults": {"nprobe": fp.nprobe, "k_factor": fp.refine_factor},
                     "met_at_defaults": default["recall@10"] >= 0.95 and default["x_flat"] >= 10,
                     "recall@10": default["recall@10"], "x_flat": default["x_flat"],
                     "passing": [r["params"] + f" ({r['refine']})" for r in ok]}
    res["memory"] = {"vectors_mib": round(x.nbytes / MIB, 1), "ivfpq_mib": round(base_bytes / MIB, 1),
                     "refine_flat_mib": round(flat_store / MIB, 1), "refine_sq8_mib": round(sq8_store / MIB, 1),
                     "peak_rss_mib": round(peak_rss_mb(), 1)}
    return res


def markdown(res: dict) -> str:
    m, dd, tg, ip = res["machine"], res["data"], res["target"], res["ivfpq"]
    out = ["# IVF-PQ with exact re-ranking (refine)", "",
           f"Machine: {m['cpus']} CPUs ({m['platform']}), load average at start {m['load_start']}, at end "
           f"{m['load_end']}; whole run {m['wall_s']} s wall (data generation, builds and searches).", "",
           f"Data: {dd['n']:,} x {dd['dim']} clustered Gaussian mix ({dd['clusters']} Zipf-sized clusters, "
           f"float32, {dd['bytes'] / MIB:,.0f} MiB), {dd['queries']} held-out queries, top-10. "
           f"IVF-PQ: the library defaults, nlist={ip['nlist']}, pq_m={ip['pq_m']}x{ip['pq_nbits']}b, "
           f"trained on {ip['train_size']:,}; built once (with its float32 refine copy: "
           f"{ip['build_with_refine_flat']['cpu_s']} CPU s / {ip['build_with_refine_flat']['wall_s']} s wall; "
           f"the sq8 copy over the same codes {res['sq8_store_build']['wall_s']} s). Plain IVF-PQ is the same "
           "index's base (the same codes, PQ-approximate scores).", "",
           f"QPS: all queries in one batched call, one process, {res['threads']} faiss threads, wall clock "
           "(best of 2); per CPU-second beside it. Recall@10 against the flat (exact) top-10. Size: the "
           "index's bytes in memory (IVF-PQ: codes, ids, centroids; refine adds its copy of the vectors).", "",
           "| index | params | recall@10 | QPS | x flat | QPS per CPU-s | x flat per CPU-s | size MiB |",
           "|---|---|---|---|---|---|---|---|"]
    flat_cpu = res["rows"][0]["qps_per_cpu_s"]
    for r in res["rows"]:
        mark = " **(defaults)**" if (r.get("refine") == "flat" and r.get("nprobe") == tg["defaults"]["nprobe"]
                                    and r.get("k_factor") == tg["defaults"]["k_factor"]) else ""
        out.append(f"| {r['index']} | {r['params']}{mark} | {r['recall@10']} | {r['qps']:,.0f} | {r['x_flat']} | "
                   f"{r['qps_per_cpu_s']:,.0f} | {r['qps_per_cpu_s'] / flat_cpu:.2f} | {r['bytes'] / MIB:,.1f} |")
    mm = res["memory"]
    out += ["", f"Target ({tg['rule']}): **{'met' if tg['met_at_defaults'] else 'not met'}** at the defaults "
            f"(nprobe={tg['defaults']['nprobe']}, refine_factor={tg['defaults']['k_factor']}): recall@10 "
            f"{tg['recall@10']}, {tg['x_flat']}x flat QPS. Passing settings: "
            f"{', '.join(tg['passing']) or 'none'}.", "",
            f"Memory: the vectors {mm['vectors_mib']:,} MiB; IVF-PQ {mm['ivfpq_mib']:,} MiB; refine flat adds "
            f"{mm['refine_flat_mib']:,} MiB (the float32 vectors again), refine sq8 {mm['refine_sq8_mib']:,} MiB; "
            f"this process's peak RSS {mm['peak_rss_mib']:,} MiB (data, flat index, refined index, sq8 copy).",
            ]
    if res.get("notes"):
        out += ["", "## Notes", "", *[f"- {n}" for n in res["notes"]]]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--k-factor", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--k-factor-sq8", type=int, nargs="+", default=[16])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--render-only", action="store_true", help="Only rebuild the .md from the .json.")
    args = ap.parse_args()
    from retrieval_kd.artifacts import atomic_write_text, write_benchmark

    if args.render_only:
        atomic_write_text(args.out.with_suffix(".md"), markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return
    res: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "load_start": [round(v, 1) for v in os.getloadavg()]}}
    t0 = time.perf_counter()
    res.update(bench(args))
    res["machine"].update(load_end=[round(v, 1) for v in os.getloadavg()], wall_s=round(time.perf_counter() - t0, 1))
    print(write_benchmark(args.out, res, markdown, args.note))


if __name__ == "__main__":
    main()
