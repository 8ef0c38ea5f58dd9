"""The plaid engine's exactly scored budget (``nfull``) against the exact engine and exhaustive
MaxSim, on SciFact train queries, for the main job's seven ColBERT models (rule 2 of
eval/results/colbert-engine/README.md).

Each model is indexed twice through ``eval.bench_colbert_engines.build`` (exact and plaid, their
defaults); queries are encoded once and searched one at a time on one thread, the exact engine
and plaid at each ``nfull`` taking whole passes over the queries in turn for two rounds; QPS per
CPU-second. nDCG@10 of each run is compared with the exhaustive ranking's (every document scored).

    python research/speed/plaid_budget.py runs/scifact/stages/student-colbert-tiny-*-s4?-*/model splade-tiny
    # -> research/speed/results/plaid-budget-train.{json,md}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "research" / "speed" / "results" / "plaid-budget-train"
NF = (32, 64, 96, 128)
TOL = 0.005


def open_model(model: str, ds, qids: list[str]):
    """A model's exact and plaid indexes (built once, at the main job's lengths, under
    indexes/bench-colbert) opened for search, and its float32 query matrices:
    ``(tag, paths, exact Searcher, plaid Searcher, queries)``."""
    import numpy as np

    from eval import bench_colbert_engines as bce
    from retrieval_kd.index.search import Searcher, encoder_for

    tag = bce.model_tag(model)
    paths = bce.build(model, "scifact", tag, False, (32, 128))
    exact, plaid = Searcher(paths["exact"]), Searcher(paths["plaid"])
    reps = [np.ascontiguousarray(r, dtype=np.float32) for r in
            encoder_for(exact.manifest).encode_queries([ds.queries.texts[q] for q in qids])]
    return tag, paths, exact, plaid, reps


def measure(model: str, ds, qids: list[str]) -> tuple[str, dict]:
    """One model's row: the exact engine and plaid at each ``nfull``, against the exhaustive ranking."""
    from eval import bench_colbert_engines as bce
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.index.stats import limit_threads

    tag, paths, exact, plaid, reps = open_model(model, ds, qids)
    fns = {"exact": lambda q: exact.search(q, 100),
           **{f"plaid nfull {n}": (lambda q, n=n: plaid.plaid.search(q, 100, {"nfull": n})) for n in NF}}
    cpu, res = dict.fromkeys(fns, 0.0), {}
    with limit_threads(1):
        for _ in range(2):
            for k, f in fns.items():
                c0 = time.process_time()
                res[k] = [f(q) for q in reps]
                cpu[k] += time.process_time() - c0
    ref, _, _ = bce.exhaustive(paths["exact"], reps, 100)
    m = {k: evaluate_run(ds.qrels, exact.to_run(qids, v), ("ndcg@10",))["ndcg@10"]
         for k, v in {**res, "exhaustive": ref}.items()}
    qps = {k: 2 * len(qids) / v for k, v in cpu.items()}
    return tag, {k: {"ndcg@10": round(m[k], 4), "delta_exhaustive": round(m[k] - m["exhaustive"], 4),
                     **({"qps_cpu": round(qps[k], 1), "x_exact": round(qps[k] / qps["exact"], 2)} if k in qps else {})}
                 for k in m}


def label(tag: str) -> str:
    """A model's row name: its regime and seed, or the untrained init."""
    if "-s4" not in tag:
        return f"init ({tag} body)"
    return f"ColBERT {'distilled' if '-kd-' in tag else 'label-only'} s4{tag.split('-s4', 1)[1][0]}"


def markdown(rows: dict, env: dict) -> str:
    lines = [f"# plaid's exactly scored budget on SciFact train ({env['date']}, git {env['git'][:7]}, {env['cpu']}, "
             "one thread, k=100, 2 rounds)", "",
             "Δ: nDCG@10 minus the exhaustive ranking's (bold: more than 0.005 away); x exact: QPS (CPU) over the "
             "exact engine's in the same run. `research/speed/plaid_budget.py`.", "",
             "| model | exhaustive nDCG@10 | exact: QPS (CPU), Δ | "
             + " | ".join(f"nfull {n}: x exact, Δ" for n in NF) + " |",
             "|---|---:|---:|" + "---:|" * len(NF)]
    for tag, r in rows.items():
        cells = [f"{r['exhaustive']['ndcg@10']:.4f}", f"{r['exact']['qps_cpu']}, {r['exact']['delta_exhaustive']:+.4f}"]
        for n in NF:
            x = r[f"plaid nfull {n}"]
            d = f"{x['delta_exhaustive']:+.4f}"
            cells.append(f"{x['x_exact']:.2f}x, {d if abs(x['delta_exhaustive']) <= TOL else f'**{d}**'}")
        lines.append(f"| {label(tag)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_models(description: str, measure, markdown, out: Path) -> None:
    """The command line of the train-query diagnostics: each model's row by ``measure(model, ds,
    qids)``, then ``out``.json (rows, environment) and ``out``.md (``markdown(rows, env)``)."""
    import argparse
    import subprocess

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("model", nargs="+", help="a trained ColBERT folder (its model/) or a registry name")
    args = ap.parse_args()
    for m in args.model:  # a path that is not there is named before any index is built
        if ("/" in m or m.startswith(".")) and not Path(m).is_dir():
            raise SystemExit(f"error: {m}: no such folder")

    from retrieval_kd.artifacts import library_versions, now_iso
    from retrieval_kd.cpu import cpu_name
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.errors import RkdError

    ds = load_dataset("scifact", "train")
    rows = {}
    for m in args.model:
        try:
            tag, rows[tag] = measure(m, ds, ds.queries.ids())
        except (RkdError, OSError) as e:  # OSError: a name that is neither registered nor in the HF cache
            raise SystemExit(f"error: {m}: {' '.join(str(e).split())[:300]}") from None
        print(tag, json.dumps(rows[tag]), flush=True)
    env = {"date": now_iso(), "cpu": cpu_name(), "versions": library_versions(),
           "git": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, env))
    print(markdown(rows, env))


if __name__ == "__main__":
    run_models(__doc__.split("\n\n")[0], measure, markdown, OUT)
