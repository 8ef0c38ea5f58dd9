"""MUVERA's fixed dimensional encodings (FDE) as ColBERT's first stage, then exact MaxSim of the
best ``M`` documents (a diagnostic on SciFact train queries only).

Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings" (2024), as
fastembed's ``fastembed.postprocess.muvera.Muvera`` implements it: for each of ``reps``
repetitions, ``k_sim`` random hyperplanes (SimHash) split the token space into ``2**k_sim``
buckets; a document's encoding holds, per bucket, the mean of its tokens there (an empty bucket
takes the token whose bucket is nearest in Hamming distance), a query's the sum of its tokens
there; each bucket's vector is projected to ``d_proj`` dimensions by a random +-1 matrix, and
everything is concatenated. The inner product of a query's and a document's encodings
approximates their MaxSim (Chamfer) score. Here it is computed in torch for the whole corpus at
once (the same arithmetic, vectorised).

``quality``: per model, encodings of every document, the best ``M`` by inner product (exact, float32;
and through a faiss 4-bit PQ fast-scan index of the encodings, 8 dimensions per code), then exact
MaxSim (the plaid engine's float32 path): the share of the exhaustive top 10 among the ``M`` and
nDCG@10 minus the exhaustive ranking's. ``timing``: one thread, CPU ms per query of each step:
the query encoding, the first stage (float32 flat, bfloat16 flat, PQ fast-scan) and bfloat16 MaxSim
of the ``M`` from padded blocks (``plaid_floor.Blocks``), against the exact engine.

    python research/speed/fde_first_stage.py quality runs/scifact/stages/student-colbert-tiny-*-s4?-*/model splade-tiny
    python research/speed/fde_first_stage.py timing runs/scifact/stages/student-colbert-tiny-kd-s4?-*/model
    # -> research/speed/results/fde-{quality,timing}-train.{json,md}
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "research" / "speed" / "results"
SETTINGS = ((10, 4, 16), (20, 5, 16))  # (reps, k_sim, d_proj): 2,560 and 10,240 dimensions
MS = (64, 128, 256)
SEED = 42


class FDE:
    """Fixed dimensional encodings for token vectors of dimension ``dim`` (MUVERA)."""

    def __init__(self, dim: int, reps: int, k_sim: int, d_proj: int, seed: int = SEED) -> None:
        import torch

        rng = np.random.default_rng(seed)
        self.reps, self.k_sim, self.d_proj, self.B = reps, k_sim, d_proj, 2 ** k_sim
        hyper = np.stack([rng.normal(size=(dim, k_sim)) for _ in range(reps)])        # fastembed's order
        proj = rng.choice([-1, 1], size=(reps, dim, d_proj))
        self.hyper = torch.from_numpy(hyper.transpose(1, 0, 2).reshape(dim, -1).astype(np.float32))
        self.proj = torch.from_numpy((proj.transpose(1, 0, 2).reshape(dim, -1) / np.sqrt(d_proj)).astype(np.float32))
        self.bits = 2 ** torch.arange(k_sim)
        self.base = torch.arange(reps) * self.B
        self.dim = reps * self.B * d_proj

    def buckets(self, x):
        """Each vector's bucket in every repetition: (n, reps), as ``rep * B + bucket``."""
        return ((x @ self.hyper > 0).long().view(len(x), self.reps, self.k_sim) * self.bits).sum(2) + self.base

    def query(self, q):
        """A query's encoding (float32 torch vector): per bucket, the sum of its projected tokens."""
        import torch

        out = torch.zeros(self.reps * self.B, self.d_proj)
        out.index_add_(0, self.buckets(q).ravel(), (q @ self.proj).view(-1, self.d_proj))
        return out.view(-1)

    def documents(self, tokens: np.ndarray, offsets: np.ndarray, block: int = 1 << 16):
        """Every document's encoding (n_docs, dim): bucket means, an empty bucket filled with the
        first token of the occupied bucket nearest in Hamming distance (the lowest such bucket id)."""
        import torch

        n_docs, RB, dp = len(offsets) - 1, self.reps * self.B, self.d_proj
        sums, counts = torch.zeros(n_docs * RB, dp), torch.zeros(n_docs * RB)
        owner = torch.from_numpy(np.repeat(np.arange(n_docs), np.diff(offsets)))
        codes = torch.zeros(len(tokens), self.reps, dtype=torch.long)
        for lo in range(0, len(tokens), block):
            x = torch.from_numpy(np.asarray(tokens[lo:lo + block], np.float32))
            b = self.buckets(x)
            codes[lo:lo + len(x)] = b - self.base
            key = (owner[lo:lo + len(x), None] * RB + b).ravel()
            sums.index_add_(0, key, (x @ self.proj).view(-1, dp))
            counts.index_add_(0, key, torch.ones(len(key)))
        enc = (sums / counts.clamp(min=1)[:, None]).view(n_docs, self.reps, self.B, dp)
        empty = (counts == 0).view(n_docs, self.reps, self.B)
        ham = ((torch.arange(self.B)[:, None] ^ torch.arange(self.B)[None]).unsqueeze(-1) >> torch.arange(self.k_sim)
               & 1).sum(-1)                                                                 # (B, B) Hamming
        for d in torch.nonzero(empty.any(2).any(1)).ravel().tolist():
            lo, hi = int(offsets[d]), int(offsets[d + 1])
            if hi == lo:
                continue
            x = torch.from_numpy(np.asarray(tokens[lo:hi], np.float32)) @ self.proj       # (n, reps*dp)
            for r in torch.nonzero(empty[d].any(1)).ravel().tolist():
                c = codes[lo:hi, r]  # nearest bucket, then the lowest bucket id, then the first token
                nearest = (ham[:, c] * self.B + c[None]).argmin(1)
                eb = empty[d, r]
                enc[d, r, eb] = x[nearest[eb], r * dp:(r + 1) * dp]
        return enc.reshape(n_docs, -1)


def pq_index(enc):
    import faiss

    index = faiss.IndexPQFastScan(enc.shape[1], enc.shape[1] // 8, 4, faiss.METRIC_INNER_PRODUCT)
    index.train(enc.numpy())
    index.add(enc.numpy())
    return index


def quality(model: str, ds, qids: list[str]) -> tuple[str, dict]:
    import torch

    from eval import bench_colbert_engines as bce
    from research.speed.plaid_budget import open_model
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.index.plaid import maxsim_torch

    tag, paths, exact, plaid, reps = open_model(model, ds, qids)
    P = plaid.plaid
    ref, _, _ = bce.exhaustive(paths["exact"], reps, 100)
    top10 = [set(d[:10].tolist()) for d, _, _ in ref]
    base = evaluate_run(ds.qrels, exact.to_run(qids, ref), ("ndcg@10",))["ndcg@10"]
    tokens = np.asarray(P.tokens_t.numpy())
    row = {"exhaustive_ndcg10": round(base, 4)}
    for reps_, k_sim, d_proj in SETTINGS:
        f = FDE(tokens.shape[1], reps_, k_sim, d_proj)
        t0 = time.process_time()
        enc = f.documents(tokens, P.offsets)
        build = time.process_time() - t0
        pq = pq_index(enc)
        for kind in ("flat", "pq"):
            for m in MS:
                res, kept = [], 0.0
                for q, ref10 in zip(reps, top10):
                    fq = f.query(torch.from_numpy(q))
                    top = (torch.topk(enc @ fq, m).indices.numpy() if kind == "flat"
                           else pq.search(fq.numpy()[None], m)[1][0])
                    top = top[top >= 0]
                    kept += len(ref10 & set(top.tolist())) / max(1, len(ref10))
                    s = maxsim_torch(torch.from_numpy(q), P.tokens_t, P.offsets, top)
                    o = np.argsort(-s, kind="stable")[:100]
                    res.append((top[o], s[o], {}))
                nd = evaluate_run(ds.qrels, exact.to_run(qids, res), ("ndcg@10",))["ndcg@10"]
                row[f"R{reps_} k{k_sim} d{d_proj} {kind} M {m}"] = {
                    "top10_kept": round(kept / len(reps), 3), "delta_exhaustive": round(nd - base, 4)}
        row[f"R{reps_} k{k_sim} d{d_proj} build_cpu_s"] = round(build, 1)
    return tag, row


def timing(model: str, ds, qids: list[str]) -> tuple[str, dict]:
    import torch

    from research.speed.plaid_budget import open_model
    from research.speed.plaid_floor import Blocks, passes
    from retrieval_kd.index.stats import limit_threads

    tag, paths, exact, plaid, reps = open_model(model, ds, qids)
    P = plaid.plaid
    tokens = np.asarray(P.tokens_t.numpy())
    blocks = Blocks(tokens, P.offsets)
    f = FDE(tokens.shape[1], *SETTINGS[0])
    enc = f.documents(tokens, P.offsets)
    enc16, pq = enc.bfloat16(), pq_index(enc)
    fq = {id(q): f.query(torch.from_numpy(q)) for q in reps}
    top = {id(q): torch.topk(enc @ fq[id(q)], max(MS)).indices.numpy() for q in reps}
    fns = {"exact": lambda q: exact.search(q, 100),
           "query encoding": lambda q: f.query(torch.from_numpy(q)),
           "first stage float32": lambda q: torch.topk(enc @ fq[id(q)], 128),
           "first stage bfloat16": lambda q: torch.topk((enc16 @ fq[id(q)].bfloat16()).float(), 128),
           "first stage PQ fast-scan": lambda q: pq.search(fq[id(q)].numpy()[None], 128),
           **{f"MaxSim {m} bfloat16": (lambda q, m=m: blocks.maxsim(torch.from_numpy(q), top[id(q)][:m])) for m in MS}}
    with limit_threads(1):
        passes(fns, reps[:50])
        ms, _ = passes(fns, reps)
    return tag, {"ms_cpu": {k: round(v, 3) for k, v in ms.items()}, "budget_ms": round(ms["exact"] / 10, 3)}


def quality_md(rows: dict, env: dict) -> str:
    from research.speed.plaid_budget import label

    cols = [f"R{r} k{k} d{d} {kind} M {m}" for r, k, d in SETTINGS for kind in ("flat", "pq") for m in MS]
    lines = [f"# MUVERA encodings as ColBERT's first stage, SciFact train ({env['date']}, git {env['git'][:7]})", "",
             "Each cell: share of the exhaustive top 10 among the M first-stage documents, and nDCG@10 after exact "
             "MaxSim of those M minus the exhaustive ranking's. `research/speed/fde_first_stage.py quality`.", ""]
    for r, k, d in SETTINGS:
        sub = [c for c in cols if c.startswith(f"R{r} k{k} d{d} ")]
        lines += [f"## R {r}, k_sim {k}, d_proj {d} ({r * 2 ** k * d} dimensions)", "",
                  "| model | " + " | ".join(c.split(f"d{d} ", 1)[1] for c in sub) + " |",
                  "|---|" + "---:|" * len(sub)]
        for tag, row in rows.items():
            lines.append(f"| {label(tag)} | " + " | ".join(
                f"{row[c]['top10_kept']:.3f}, {row[c]['delta_exhaustive']:+.4f}" for c in sub) + " |")
        lines.append("")
    return "\n".join(lines)


def timing_md(rows: dict, env: dict) -> str:
    from research.speed.plaid_budget import label

    keys = list(next(iter(rows.values()))["ms_cpu"])
    lines = [f"# MUVERA first stage: CPU ms per query, SciFact train ({env['date']}, git {env['git'][:7]}, {env['cpu']}, "
             "one thread)", "", "Budget: a tenth of the exact engine's time. `research/speed/fde_first_stage.py timing`.", "",
             "| model | budget | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for tag, row in rows.items():
        lines.append(f"| {label(tag)} | {row['budget_ms']:.2f} | " + " | ".join(f"{row['ms_cpu'][k]:.2f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from research.speed.plaid_budget import run_models

    usage = "usage: fde_first_stage.py {quality,timing} MODEL [MODEL ...]"
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(f"{usage}\n\n{__doc__}")
        raise SystemExit(0)
    what = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in ("quality", "timing") else None
    if what is None:
        raise SystemExit(f"error: the first argument is quality or timing ({usage})")
    run_models(__doc__.split("\n\n")[0], quality if what == "quality" else timing,
               quality_md if what == "quality" else timing_md, RESULTS / f"fde-{what}-train")
