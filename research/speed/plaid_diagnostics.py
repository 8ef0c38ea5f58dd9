"""Where the plaid engine loses against exhaustive MaxSim, on SciFact train queries (one model).

``pruning``: how much of the exhaustive top 10 the candidates hold and the best 32/128/256 by XTR
estimate keep; nDCG@10 when the survivors are chosen by XTR estimate (32, 64, 128) or by PLAID's
centroid interaction (each candidate scored by its tokens' centroids: 32 of the best 128 or 256
by estimate, 64 of 256, 32 of all candidates); and the cost of each step (ms of CPU per query).
``k-token``: nDCG@10 and cost at nprobe 3/4 x k_token 192/512/1024 x nfull 32/48/64.
research/speed/FINDINGS.md and eval/results/colbert-engine/README.md (rule 2) use both.

    python research/speed/plaid_diagnostics.py pruning runs/scifact/stages/student-colbert-tiny-kd-s42-*/model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def open_model(model: str):
    """SciFact train, and the model's exact and plaid searchers and query matrices."""
    from research.speed.plaid_budget import open_model as open_indexes
    from retrieval_kd.data.registry import load_dataset

    ds = load_dataset("scifact", "train")
    _, _, exact, plaid, reps = open_indexes(model, ds, ds.queries.ids())
    return ds, exact, plaid, reps


def ndcg(ds, searcher, results) -> float:
    from retrieval_kd.eval.metrics import evaluate_run

    return evaluate_run(ds.qrels, searcher.to_run(ds.queries.ids(), results), ("ndcg@10",))["ndcg@10"]


def pruning(model: str) -> None:
    import torch

    from retrieval_kd.index.plaid import maxsim_torch
    from retrieval_kd.index.stats import limit_threads
    from retrieval_kd.retrieve.topk import ranked

    ds, exact, plaid, reps = open_model(model)
    pl = plaid.plaid
    offsets, lens = pl.offsets, np.diff(pl.offsets)
    tok = pl.tokens_t.float()
    _, assign = pl.ivf.quantizer.search(tok.numpy(), 1)  # every token's centroid
    nlist = pl.ivf.nlist
    codes = np.full((len(lens), int(lens.max())), nlist, dtype=np.int64)  # padding: row nlist, -inf
    for d in range(len(lens)):
        codes[d, :lens[d]] = assign.ravel()[offsets[d]:offsets[d + 1]]
    codes_t = torch.from_numpy(codes)
    seg = (np.cumsum(lens) - lens)[lens > 0]

    def centroid_scores(qt, docs: np.ndarray) -> np.ndarray:
        table = torch.cat([qt @ pl.centroids.T.float(), torch.full((qt.shape[0], 1), -1e9)], 1).T.contiguous()
        return table[codes_t[torch.from_numpy(docs)]].max(1).values.sum(1).numpy()

    def estimates(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates in XTR-estimate order (as PlaidSearch.search ranks them)."""
        p = pl.params
        ts, tr = pl.candidates(q, int(p["nprobe"]), int(p["k_token"]), None)
        found = tr >= 0
        floor = np.where(found, ts, np.inf).min(axis=1, keepdims=True)
        cand, inv = np.unique(np.searchsorted(offsets, tr[found], side="right") - 1, return_inverse=True)
        qtok = np.broadcast_to(np.arange(len(q))[:, None], tr.shape)[found]
        gain = torch.zeros(len(cand) * len(q))
        gain.scatter_reduce_(0, torch.from_numpy(inv.astype(np.int64) * len(q) + qtok),
                             torch.from_numpy((ts - floor)[found].astype(np.float32)), "amax")
        return cand, cand[ranked(cand, gain.view(len(cand), len(q)).sum(1).numpy())]

    names = ("exhaustive", "xtr 32", "xtr 64", "xtr 128", "centroid 32 of 128", "centroid 32 of 256",
             "centroid 64 of 256", "centroid 32 of all")
    runs: dict[str, list] = {n: [] for n in names}
    kept: dict[str, list] = {"candidates": [], "xtr 32": [], "xtr 128": [], "xtr 256": []}
    with limit_threads(1):
        for q in reps:
            qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
            full = np.zeros(len(lens), np.float32)
            full[lens > 0] = np.maximum.reduceat((qt @ tok.T).numpy(), seg, axis=1).sum(0)
            cand, order = estimates(np.ascontiguousarray(q, dtype=np.float32))
            top10 = np.argsort(-full, kind="stable")[:10]
            kept["candidates"].append(np.isin(top10, cand).mean())
            for n in (32, 128, 256):
                kept[f"xtr {n}"].append(np.isin(top10, order[:n]).mean())

            def exact_top(docs: np.ndarray):
                o = ranked(docs, full[docs])[:100]
                return docs[o], full[docs][o], {}

            def by_centroids(docs: np.ndarray, m: int) -> np.ndarray:
                return docs[ranked(docs, centroid_scores(qt, docs))[:m]]

            picks = {"exhaustive": np.arange(len(lens)), "xtr 32": order[:32], "xtr 64": order[:64],
                     "xtr 128": order[:128], "centroid 32 of 128": by_centroids(order[:128], 32),
                     "centroid 32 of 256": by_centroids(order[:256], 32),
                     "centroid 64 of 256": by_centroids(order[:256], 64), "centroid 32 of all": by_centroids(cand, 32)}
            for n, docs in picks.items():
                runs[n].append(exact_top(docs))
    nd = {n: ndcg(ds, exact, r) for n, r in runs.items()}
    print(json.dumps({"ndcg@10": {n: round(v, 4) for n, v in nd.items()},
                      "delta_exhaustive": {n: round(v - nd["exhaustive"], 4) for n, v in nd.items()},
                      "exhaustive top 10 kept": {n: round(float(np.mean(v)), 4) for n, v in kept.items()}}, indent=1))
    cost = {}
    qs = [np.ascontiguousarray(q, dtype=np.float32) for q in reps[:200]]
    steps = {"plaid search": lambda q: pl.search(q, 100),
             "coarse step + IVF": lambda q: pl.candidates(q, 3, 192, None),
             "exact engine search": lambda q: exact.search(q, 100),
             "MaxSim of 32 documents": lambda q: maxsim_torch(torch.from_numpy(q), pl.tokens_t, offsets, np.arange(32) * 100),
             "MaxSim of 128 documents": lambda q: maxsim_torch(torch.from_numpy(q), pl.tokens_t, offsets, np.arange(128) * 40),
             "centroid scores of 128 documents": lambda q: centroid_scores(torch.from_numpy(q), np.arange(128) * 40)}
    with limit_threads(1):
        for n, f in steps.items():
            c0 = time.process_time()
            for q in qs:
                f(q)
            cost[n] = round(1e3 * (time.process_time() - c0) / len(qs), 3)
    print(json.dumps({"ms of CPU per query": cost}, indent=1))


def k_token(model: str) -> None:
    from retrieval_kd.index.stats import limit_threads

    ds, exact, plaid, reps = open_model(model)
    with limit_threads(1):
        for nprobe in (3, 4):
            for kt in (192, 512, 1024):
                for nf in (32, 48, 64):
                    c0 = time.process_time()
                    res = [plaid.plaid.search(q, 100, {"k_token": kt, "nfull": nf, "nprobe": nprobe}) for q in reps]
                    ms = 1e3 * (time.process_time() - c0) / len(reps)
                    print(f"nprobe {nprobe} k_token {kt} nfull {nf}: nDCG@10 {ndcg(ds, plaid, res):.4f}, "
                          f"{ms:.2f} ms of CPU per query", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("pruning", "k-token"))
    ap.add_argument("model", help="a trained ColBERT folder (its model/) or a registry name")
    args = ap.parse_args()
    if ("/" in args.model or args.model.startswith(".")) and not Path(args.model).is_dir():
        raise SystemExit(f"error: {args.model}: no such folder")
    pruning(args.model) if args.what == "pruning" else k_token(args.model)


if __name__ == "__main__":
    main()
