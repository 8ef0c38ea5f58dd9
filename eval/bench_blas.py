"""faiss on the OpenBLAS kernels retrieval-kd pins, against faiss on the kernels it picks itself.

faiss-cpu's wheels bundle an OpenBLAS older than numpy's; on a CPU its table does not know it
runs the generic "Prescott" kernels (retrieval_kd/cpu.py). This benchmark builds the index behind
the ColBERT ``exact`` engine (IVF-PQ over every token vector, its default parameters) and searches
it, through the same ``build_faiss`` code in two kinds of process, alternating, the same inputs:

- ``plain``: faiss imported before retrieval-kd, so faiss's OpenBLAS keeps its own choice;
- ``pinned``: retrieval-kd imported first (what every ``rkd`` command does), so it runs on the
  kernels :func:`retrieval_kd.cpu.pin_openblas_core` names.

Each process reports the kernels faiss's OpenBLAS loaded, the build's time (k-means and PQ
training, then adding), and the CPU time of a candidate search per query on one thread (32 token
vectors sampled from the corpus, each fetching its 32 nearest tokens as the exact engine does;
the median of three passes). The two kinds' results are compared too: the kernels round
differently, which can move k-means and so the candidates. Times: the median over ``--rounds``.

    python -m eval.bench_blas            # the newest ColBERT index under runs/scifact
    # -> eval/results/bench-blas/bench-blas.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results" / "bench-blas" / "bench-blas"
KINDS = ("plain", "pinned")
QUERIES, QTOKENS, K_TOKEN, SEARCH_PASSES = 300, 32, 32, 3


def default_tokens() -> Path:
    found = sorted((ROOT / "runs" / "scifact" / "stages").glob("index-colbert-*/index/tokens.npy"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no ColBERT index under runs/scifact/stages (run the main job first): pass --tokens")
    return found[-1]


def check_tokens(path: Path) -> None:
    """One line naming the file and the problem, before any process starts, for anything but a
    2-D float array of token vectors (as a ColBERT index's ``tokens.npy``)."""
    import numpy as np

    if not path.is_file():
        raise SystemExit(f"error: --tokens {path}: no such file")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise SystemExit(f"error: --tokens {path}: not a .npy file")
    try:
        t = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: --tokens {path}: not a .npy array ({' '.join(str(e).split())[:200]})") from None
    if t.ndim != 2 or t.dtype.kind != "f" or min(t.shape) == 0:
        raise SystemExit(f"error: --tokens {path}: expected a 2-D float array of token vectors, "
                         f"found shape {t.shape} of {t.dtype}")


def child(kind: str, tokens: Path, out: Path) -> None:
    """One process of ``kind``: build, search, write timings and candidate ids to ``out``."""
    if kind == "plain":
        import faiss  # loaded first: retrieval-kd then leaves faiss's kernels alone
    else:
        from retrieval_kd.cpu import pin_openblas_core

        pin_openblas_core()  # what importing retrieval-kd did already: faiss is not loaded yet
        import faiss
    import numpy as np

    from retrieval_kd.cpu import faiss_blas_core
    from retrieval_kd.index.faiss_index import FaissParams, build_faiss

    t = np.load(tokens, mmap_mode="r")
    n, dim = t.shape
    c0, w0 = time.process_time(), time.perf_counter()
    index, fp = build_faiss(lambda: [t], n, dim, FaissParams(index="ivfpq", nprobe=16))
    build_cpu, build_wall = time.process_time() - c0, time.perf_counter() - w0
    rng = np.random.default_rng(0)
    queries = [np.asarray(t[np.sort(rng.choice(n, QTOKENS, replace=False))], np.float32) for _ in range(QUERIES)]
    faiss.omp_set_num_threads(1)  # searches on one thread, as eval.bench_colbert_engines times the engines
    passes = []
    for _ in range(SEARCH_PASSES):
        c0 = time.process_time()
        ids = [index.search(q, K_TOKEN)[1] for q in queries]
        passes.append(time.process_time() - c0)
    search_cpu = sorted(passes)[len(passes) // 2]
    np.save(out.with_suffix(".npy"), np.stack(ids))
    out.write_text(json.dumps({"kind": kind, "core": faiss_blas_core(), "build_cpu_s": round(build_cpu, 2),
                               "build_wall_s": round(build_wall, 2), "search_ms_cpu": round(1e3 * search_cpu / QUERIES, 3),
                               "tokens": n, "dim": dim, "nlist": fp.nlist, "pq_m": fp.pq_m,
                               "train_size": fp.train_size}))


def run(kind: str, tokens: Path, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    subprocess.run([sys.executable, "-m", "eval.bench_blas", "--child", kind, "--tokens", str(tokens),
                    "--child-out", str(out)], cwd=ROOT, env=env, check=True)
    return json.loads(out.read_text())


def shared(a: Path, b: Path) -> tuple[float, float]:
    """Two processes' searches: the mean share of candidate token ids in common, and the share of
    queries whose results (ids in rank order) are identical."""
    import numpy as np

    x, y = np.load(a), np.load(b)
    common = np.mean([len(np.intersect1d(p, q)) / max(len(np.unique(p)), 1) for p, q in zip(x, y)])
    same = np.mean([np.array_equal(p, q) for p, q in zip(x, y)])
    return float(common), float(same)


def compare(tokens: Path, rounds: int, work: Path) -> dict:
    import statistics

    rows: dict[str, list[dict]] = {k: [] for k in KINDS}
    for r in range(rounds):
        for kind in KINDS:
            rows[kind].append(run(kind, tokens, work / f"{kind}-{r}.json"))
            print(json.dumps(rows[kind][-1]), flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("build_cpu_s", "build_wall_s", "search_ms_cpu")}
           | {"core": v[0]["core"]} for k, v in rows.items()}
    ratio = {m: round(med["plain"][m] / med["pinned"][m], 2) for m in ("build_cpu_s", "build_wall_s", "search_ms_cpu")}
    common, same = shared(work / "plain-0.npy", work / "pinned-0.npy")
    return {"rows": med, "runs": rows, "x_plain": ratio, "shared_candidates": round(common, 6),
            "identical_searches": round(same, 6),
            "index": {k: rows["pinned"][0][k] for k in ("tokens", "dim", "nlist", "pq_m", "train_size")}}


def markdown(res: dict) -> str:
    env, ix = res["environment"], res["index"]
    lines = [f"# faiss's OpenBLAS kernels: plain vs pinned ({env['date']}, git {env['git'][:7]}, {env['cpu']}, "
             f"{env['cores']} cores, median of {res['rounds']} rounds)", "",
             f"IVF-PQ over {ix['tokens']:,} token vectors of width {ix['dim']} (`{res['tokens']}`): nlist {ix['nlist']}, "
             f"pq_m {ix['pq_m']}, k-means on {ix['train_size']:,}; search: {QUERIES} queries of {QTOKENS} token vectors, "
             f"{K_TOKEN} nearest each, nprobe 16. `python -m eval.bench_blas`.", "",
             "| process | faiss's OpenBLAS kernels | build CPU s | build wall s | search ms/query (CPU) |",
             "|---|---|---:|---:|---:|"]
    for k in KINDS:
        r = res["rows"][k]
        lines.append(f"| {k} | {r['core']} | {r['build_cpu_s']:.1f} | {r['build_wall_s']:.1f} | {r['search_ms_cpu']:.3f} |")
    x = res["x_plain"]
    lines.append(f"| **pinned / plain speed** | | **{x['build_cpu_s']:.2f}x** | **{x['build_wall_s']:.2f}x** | "
                 f"**{x['search_ms_cpu']:.2f}x** |")
    lines += ["", f"The two processes' searches (first round): {res['shared_candidates']:.2%} of candidate tokens in "
              f"common; {res['identical_searches']:.2%} of queries with identical results (ids in rank order)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=Path, help="a ColBERT index's tokens.npy (default: the newest under runs/scifact)")
    ap.add_argument("--rounds", type=int, default=2, help="plain/pinned process pairs, alternating (default 2)")
    ap.add_argument("--out", type=Path, default=OUT, help="output path without suffix (.json and .md are written)")
    ap.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 1:
        raise SystemExit(f"error: --rounds must be at least 1, not {args.rounds}")
    tokens = (args.tokens or default_tokens()).resolve()
    check_tokens(tokens)
    if args.child:
        return child(args.child, tokens, args.child_out)
    import tempfile

    from eval.bench_speed import environment

    with tempfile.TemporaryDirectory(prefix="rkd-bench-blas-") as work:
        res = compare(tokens, args.rounds, Path(work))
    res.update(environment=environment(os.cpu_count() or 1), rounds=args.rounds,
               tokens=os.path.relpath(tokens, ROOT) if tokens.is_relative_to(ROOT) else str(tokens))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
