"""ColBERT search engines side by side: ``exact`` (MaxSim over every candidate) vs ``plaid``
(centroid pruning, MaxSim on the survivors), one process, the same queries.

For each trained ColBERT (``--model``, repeatable; default: the newest SciFact
``student-colbert-tiny-kd`` under ``runs/``), the corpus is encoded once (one work folder kept
between the two builds) and indexed twice through ``build_index``: the exact engine with its
defaults (IVF-PQ candidates, 4*sqrt(tokens) lists) and the plaid engine with its defaults
(2*sqrt(tokens) lists, nprobe 3, k_token 128, nfull from the corpus size). Queries are encoded
once and searched one at a time on one thread, each engine running whole passes over the
queries in turn (exact, plaid, exact, ... for ``--rounds`` rounds: a busy machine slows both
alike, and neither runs in the other's cache, as per-query alternation would do). QPS is given
per CPU-second (process time, what other jobs on a shared machine do not change) and per
wall-clock second; quality is nDCG@10 and recall@100 of each engine's run at ``-k``.

Both engines approximate one ranking: MaxSim of the query against every document of the corpus.
That ranking (``exhaustive``: the stored float16 token vectors of every document scored, one pass,
timed alike) is the reference each engine's nDCG@10 is also compared with, so a gap says which
engine departs from the model's own ranking, not only from the other engine. ``--nfull`` and
``--k-token`` override the plaid engine's search budget (as ``rkd search`` does); ``--split train``
measures on SciFact's train queries, where engine settings are chosen without the test queries.

    python -m eval.bench_colbert_engines            # -> eval/results/bench-colbert-engines.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results"
WORK = ROOT / "indexes" / "bench-colbert"


def default_model() -> str:
    found = sorted((ROOT / "runs" / "scifact" / "stages").glob("student-colbert-tiny-kd-*/model/model.safetensors"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no trained ColBERT under runs/scifact/stages: pass --model")
    return str(found[-1].parent)


def model_tag(model: str) -> str:
    """A model's name in the tables: its stage folder for a trained ``.../model``, else its own name."""
    return Path(model).parent.name if Path(model).name == "model" else Path(model).name


def build(model: str, dataset: str, tag: str, rebuild: bool, lengths: tuple[int, int]) -> dict[str, Path]:
    from retrieval_kd.index.build import build_index
    from retrieval_kd.index.encoders import ColbertParams

    enc = ColbertParams(query_length=lengths[0], document_length=lengths[1])  # the main job's lengths

    out, work = {}, WORK / f".{tag}.work"
    for engine in ("exact", "plaid"):
        out[engine] = WORK / f"{tag}-{engine}"
        if rebuild or not (out[engine] / "manifest.json").is_file():
            build_index("colbert", dataset, out[engine], model, encoder_params=enc, work_dir=work,
                        keep_work=engine == "exact", engine=engine, name=f"{tag}-{engine}")
    return out


def exhaustive(folder: Path, reps: list, k: int) -> tuple[list, float, float]:
    """MaxSim against every document (the ranking both engines approximate), and its CPU / wall s."""
    import torch

    from retrieval_kd.index.late import LateIndex
    from retrieval_kd.retrieve.topk import top_k

    late = LateIndex(folder, None)
    every = np.arange(late.n_docs)
    lens = np.diff(late.offsets)
    nz = lens > 0
    seg = (np.cumsum(lens) - lens)[nz]
    tokens = torch.from_numpy(np.asarray(late.tokens, dtype=np.float32))  # float16 vectors, float32 arithmetic
    out, c0, t0 = [], time.process_time(), time.perf_counter()
    for q in reps:
        sim = (torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)) @ tokens.T).numpy()
        s = np.zeros(late.n_docs, dtype=np.float32)
        s[nz] = np.maximum.reduceat(sim, seg, axis=1).sum(axis=0)
        docs, scores = top_k(every, s, k)
        out.append((docs, scores, {"candidates": late.n_docs}))
    return out, time.process_time() - c0, time.perf_counter() - t0


def compare(paths: dict[str, Path], dataset: str, split: str, k: int, rounds: int,
            plaid_overrides: dict | None = None) -> dict:
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.index.search import Searcher, encoder_for
    from retrieval_kd.index.stats import limit_threads

    searchers = {e: Searcher(p, plaid_overrides if e == "plaid" else None) for e, p in paths.items()}
    ds = load_dataset(dataset, split)
    qids = ds.queries.ids()
    reps = encoder_for(searchers["exact"].manifest).encode_queries([ds.queries.texts[q] for q in qids])
    cpu = dict.fromkeys(searchers, 0.0)
    wall = dict.fromkeys(searchers, 0.0)
    results = {e: [] for e in searchers}
    with limit_threads(1):
        for r in range(rounds):
            for e, s in searchers.items():
                for q in reps:
                    c0, t0 = time.process_time(), time.perf_counter()
                    res = s.search(q, k)
                    cpu[e] += time.process_time() - c0
                    wall[e] += time.perf_counter() - t0
                    if r == 0:
                        results[e].append(res)
    n = len(qids) * rounds
    with limit_threads(1):
        ref, ref_cpu, ref_wall = exhaustive(paths["exact"], reps, k)
    ref_m = evaluate_run(ds.qrels, searchers["exact"].to_run(qids, ref), ("ndcg@10", "recall@100"))
    out = {"exhaustive": {"qps_cpu": round(len(qids) / ref_cpu, 1), "qps_wall": round(len(qids) / ref_wall, 1),
                          **{x: round(v, 4) for x, v in ref_m.items()}}}
    for e, s in searchers.items():
        run = s.to_run(qids, results[e])
        m = evaluate_run(ds.qrels, run, ("ndcg@10", "recall@100"))
        man = s.manifest
        out[e] = {"qps_cpu": round(n / cpu[e], 1), "qps_wall": round(n / wall[e], 1),
                  "ms_per_query_cpu": round(1e3 * cpu[e] / n, 3), **{x: round(v, 4) for x, v in m.items()},
                  "avg_candidates": round(float(np.mean([x[2]["candidates"] for x in results[e]])), 1),
                  "avg_exact_scored": round(float(np.mean([x[2].get("exact_scored", x[2]["candidates"])
                                                           for x in results[e]])), 1),
                  "search": s.search_params, "nlist": man["params"]["faiss"]["nlist"],
                  "build_s": round(man["timings_s"]["build_s"], 1),
                  "index_bytes": man["stats"]["index_bytes"]}
    out["speedup_cpu"] = round(out["plaid"]["qps_cpu"] / out["exact"]["qps_cpu"], 2)
    out["speedup_wall"] = round(out["plaid"]["qps_wall"] / out["exact"]["qps_wall"], 2)
    out["ndcg10_delta"] = round(out["plaid"]["ndcg@10"] - out["exact"]["ndcg@10"], 4)
    out["recall100_delta"] = round(out["plaid"]["recall@100"] - out["exact"]["recall@100"], 4)
    for e in ("exact", "plaid"):
        out[f"{e}_vs_exhaustive_ndcg10"] = round(out[e]["ndcg@10"] - out["exhaustive"]["ndcg@10"], 4)
    return out


def markdown(rows: dict[str, dict], args) -> str:
    budget = f", plaid search {args.plaid_overrides}" if args.plaid_overrides else ""
    lines = [f"# ColBERT engines on {args.dataset} {args.split} (k={args.k}, one thread, {args.rounds} rounds, "
             f"engines alternating whole passes{budget})", "",
             "`exhaustive`: MaxSim against every document (the ranking both engines approximate; one pass). "
             "Δ exhaustive: the engine's nDCG@10 minus the exhaustive ranking's.", "",
             "| model | engine | QPS (CPU) | QPS (wall) | nDCG@10 | Δ exhaustive | R@100 | exactly scored | lists | build s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tag, r in rows.items():
        x = r["exhaustive"]
        lines.append(f"| {tag} | exhaustive | {x['qps_cpu']} | {x['qps_wall']} | {x['ndcg@10']:.4f} | | "
                     f"{x['recall@100']:.4f} | all | | |")
        for e in ("exact", "plaid"):
            x = r[e]
            lines.append(f"| {tag} | {e} | {x['qps_cpu']} | {x['qps_wall']} | {x['ndcg@10']:.4f} | "
                         f"{r[e + '_vs_exhaustive_ndcg10']:+.4f} | {x['recall@100']:.4f} | {x['avg_exact_scored']} | "
                         f"{x['nlist']} | {x['build_s']} |")
        lines.append(f"| {tag} | plaid / exact | **{r['speedup_cpu']}x** | {r['speedup_wall']}x | "
                     f"{r['ndcg10_delta']:+.4f} | | {r['recall100_delta']:+.4f} | | | |")
    return "\n".join(lines) + "\n"


def positive(text: str) -> int:
    """An argparse type: an integer above 0."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {n}")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="trained ColBERT folder (repeatable)")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--query-length", type=int, default=32)
    ap.add_argument("--document-length", type=int, default=128)
    ap.add_argument("--nfull", type=positive, help="plaid: candidates scored exactly (default: the index's)")
    ap.add_argument("--k-token", type=positive, help="plaid: document tokens kept per query token")
    ap.add_argument("--out", type=Path, default=OUT / "bench-colbert-engines")
    args = ap.parse_args()
    args.plaid_overrides = {k: v for k, v in (("nfull", args.nfull), ("k_token", args.k_token)) if v is not None}
    from retrieval_kd.errors import RkdError

    models = args.model or [default_model()]
    for model in models:  # a path that is not there is named before any index is built
        if model.startswith(("/", ".")) and not Path(model).is_dir():
            raise SystemExit(f"error: --model {model}: no such folder")
    rows = {}
    try:
        from retrieval_kd.data.registry import load_dataset

        load_dataset(args.dataset, args.split)  # a wrong dataset or split fails before any build
        for model in models:
            tag = model_tag(model)
            paths = build(model, args.dataset, tag, args.rebuild, (args.query_length, args.document_length))
            rows[tag] = compare(paths, args.dataset, args.split, args.k, args.rounds, args.plaid_overrides)
            print(json.dumps({tag: rows[tag]}, indent=1), flush=True)
    except RkdError as e:
        raise SystemExit(f"error: {e}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
