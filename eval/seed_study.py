"""Seed study of bench-distill's bi-encoder 8x2 rows: each kind x several seeds, on any device.

bench_distill.py runs each row once (seed 42) on 2 CPU cores, so gaps of a few thousandths
between rows are untested. This script trains the same row configurations (bench_distill's
``row_config``: same settings, same score stores) with several seeds, on whatever device torch
sees (a GPU where one exists), and writes each row's test run (exact inner-product top-100).
``--evaluate`` then scores the runs with ranx (the project's metrics code, here, not on the
device) and writes eval/results/seed-study.{json,md}: per kind the nDCG@10 per seed, mean and
sd, and each distilled kind against the label-only control (mean delta, per-seed deltas, a
paired t-test over the test queries on seed-averaged nDCG@10).

    python eval/seed_study.py train --init PATH --store base=DIR --store scaled=DIR \\
        --store ls=DIR --seeds 42,43,44 --out OUT_DIR            # writes OUT_DIR/runs.jsonl.gz
    python eval/seed_study.py evaluate OUT_DIR/runs.jsonl.gz --note "..."

Each trained row is appended to runs.jsonl.gz as its own gzip member as soon as it is done, so a
run stopped at a time limit keeps every finished row.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_distill as bench  # noqa: E402

KINDS = ("label-only-8x2", "kl+infonce-8x2", "kl+infonce-8x2-ls")
# which store a kind trains from: label-only reads the base store's candidates (no teacher),
# kl+infonce the base store scaled by the bi-encoder's teacher_scale, -ls the self-ensemble's
STORE_OF = {"label-only-8x2": "base", "kl+infonce-8x2": "scaled", "kl+infonce-8x2-ls": "ls"}
DEPTH = 100


def row_kind(kind: str, seed: int) -> str:
    return kind if seed == bench.COMMON["seed"] else f"{kind}-s{seed}"


def environment() -> dict[str, Any]:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    for name in ("transformers", "sentence_transformers", "datasets", "pyarrow"):
        try:
            env[name] = __import__(name).__version__
        except Exception as e:  # recorded, not fatal here
            env[name] = f"unavailable: {e}"
    return env


def exact_run(model_path: str, ds, max_seq_length: int) -> tuple[dict, float]:
    """Encode the test corpus and queries, exact inner-product top-``DEPTH`` (torch, on the model's device)."""
    import torch

    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.retrieve.dense import DenseParams, encode_texts, load_encoder

    params = DenseParams(max_seq_length=max_seq_length, batch_size=128)
    st = load_encoder(resolve_model(model_path), params)
    t0 = time.perf_counter()
    d = torch.from_numpy(encode_texts(st, ds.corpus.texts(params.title_sep), params, params.doc_prompt))
    q = torch.from_numpy(encode_texts(st, list(ds.queries.texts.values()), params, params.query_prompt))
    scores, idx = (q @ d.T).topk(min(DEPTH, d.shape[0]), dim=1)
    secs = time.perf_counter() - t0
    ids = ds.corpus.ids()
    run = {qid: {ids[j]: float(s) for j, s in zip(idx[i].tolist(), scores[i].tolist())}
           for i, qid in enumerate(ds.queries.ids())}
    return run, secs


def train_rows(args: argparse.Namespace) -> int:
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.store import ScoreStore
    from retrieval_kd.train.config import load_config
    from retrieval_kd.train.stage import train_stage

    stores = dict(s.split("=", 1) for s in args.store)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    ds = load_dataset(bench.DATASET, "test")
    env = environment()
    print(json.dumps(env), flush=True)
    dest = out / "runs.jsonl.gz"
    seeds = [int(s) for s in args.seeds.split(",")]
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    ev = bench.FAMILY["bi-encoder"]["eval"]["max_seq_length"]

    def emit(rec: dict) -> None:
        with gzip.open(dest, "at", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    if args.with_init:
        run, secs = exact_run(args.init, ds, ev)
        emit({"kind": "init", "seed": None, "init": args.init, "env": env, "eval_s": round(secs, 2), "run": run})
        print(f"init: encoded and searched in {secs:.1f} s", flush=True)
    for seed in seeds:
        for kind in kinds:
            rk = row_kind(kind, seed)
            cfg = bench.row_config("bi-encoder", rk)
            store = Path(stores[STORE_OF[kind]])
            cfg["store"] = ScoreStore(store).manifest["store_id"]
            if args.max_steps:  # smoke runs only: recorded in the row's config
                cfg["train"]["max_steps"] = args.max_steps
            model_dir = work / f"bi-encoder--{rk}"
            tcfg = load_config(None, family="bi-encoder", init=args.init, scores=[str(store)],
                               dataset=bench.DATASET, output=str(model_dir), **cfg["train"])
            t0 = time.perf_counter()
            train_stage(tcfg, progress=False)
            train_s = time.perf_counter() - t0
            m = json.loads((model_dir / "manifest.json").read_text())
            run, secs = exact_run(str(model_dir), ds, ev)
            emit({"kind": kind, "seed": seed, "row": rk, "config": cfg, "env": env,
                  "train": {"steps": m["outputs"]["global_step"], "train_loss": m["outputs"]["train_loss"],
                            "examples_per_s": m["outputs"]["examples_per_s"], "examples": m["examples"],
                            "train_s": round(train_s, 2), "init": m.get("init")},
                  "eval_s": round(secs, 2), "run": run})
            print(f"{rk}: trained in {train_s:.1f} s ({m['outputs']['examples_per_s']} ex/s), "
                  f"search {secs:.1f} s", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Evaluation (here, with ranx)


def read_rows(path: Path) -> list[dict]:
    rows: dict[tuple, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            rows[(rec["kind"], rec["seed"])] = rec  # a rerun row replaces the earlier one
    return list(rows.values())


def evaluate(args: argparse.Namespace) -> int:
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.eval.metrics import evaluate_run

    ds = load_dataset(bench.DATASET, "test")
    rows = read_rows(Path(args.runs))
    scored = []
    for r in rows:
        m = evaluate_run(ds.qrels, r["run"], bench.METRICS)
        pq = evaluate_run(ds.qrels, r["run"], ["ndcg@10"], per_query=True)["ndcg@10"]
        rk = r.get("row", r["kind"])
        scored.append({"family": "bi-encoder", "kind": rk, "row": rk, "seed": r["seed"],
                       "config": r.get("config") or {"train": {"seed": None}},
                       "metrics": {k: round(float(v), 4) for k, v in m.items()},
                       "per_query": {"ndcg@10": pq}, "train": r.get("train"),
                       "eval_s": r.get("eval_s"), "env": r.get("env")})
    trained = [s for s in scored if s["seed"] is not None]
    groups = bench.seed_groups(trained)
    comparison = bench.seed_comparison(groups)
    env = next((r["env"] for r in rows if r.get("env")), {})
    out = bench.OUT
    res = {"study": "seed-study", "source": str(args.runs), "note": args.note, "environment": env,
           "comparison": comparison,
           "rows": [{k: v for k, v in s.items() if k != "per_query"} for s in scored],
           "per_query_ndcg@10": {s["row"]: s["per_query"]["ndcg@10"] for s in scored}}
    (out / "seed-study.json").write_text(json.dumps(res, indent=1) + "\n")
    init = next((s for s in scored if s["seed"] is None), None)
    md = ["# Seed study: bi-encoder 8x2 rows of bench-distill", "",
          f"Device: {env.get('device')} (torch {env.get('torch')}, CUDA {env.get('cuda')}, "
          f"transformers {env.get('transformers')}, sentence-transformers {env.get('sentence_transformers')}). "
          "Same row configurations and score stores as eval/results/bench-distill.md; each row "
          "trained with each seed, evaluated on SciFact test by exact inner-product search "
          f"(top-{DEPTH}, {bench.FAMILY['bi-encoder']['eval']['max_seq_length']} tokens), "
          "metrics by ranx on the CPU machine. `python eval/seed_study.py` reproduces it.", ""]
    if args.note:
        md += [args.note, ""]
    if init:
        md += [f"Untrained init on this device: nDCG@10 {init['metrics']['ndcg@10']:.4f}.", ""]
    md += bench.seeds_section(trained)[2:]
    md += ["| row | seed | nDCG@10 | MRR@10 | R@100 | train s | ex/s | steps |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sorted(trained, key=lambda s: (KINDS.index(bench.split_kind(s["kind"])[0]), s["seed"])):
        t = s.get("train") or {}
        mm = s["metrics"]
        md.append(f"| {bench.LABEL[bench.split_kind(s['kind'])[0]]} | {s['seed']} | {mm['ndcg@10']:.4f} | "
                  f"{mm['mrr@10']:.4f} | {mm['recall@100']:.4f} | {t.get('train_s', '')} | "
                  f"{t.get('examples_per_s', '')} | {t.get('steps', '')} |")
    (out / "seed-study.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train kinds x seeds and write their test runs")
    t.add_argument("--init", required=True, help="bi-encoder init (short name, HF id or path)")
    t.add_argument("--store", action="append", required=True,
                   help="NAME=DIR for base, scaled and ls (see STORE_OF)")
    t.add_argument("--seeds", default="42,43,44")
    t.add_argument("--kinds", default="", help=f"comma-separated, default {','.join(KINDS)}")
    t.add_argument("--with-init", action="store_true", help="also evaluate the untrained init")
    t.add_argument("--work", default="runs/seed-study", help="where the students are saved")
    t.add_argument("--out", required=True)
    t.add_argument("--max-steps", type=int, default=0, help="cap training steps (smoke runs)")
    e = sub.add_parser("evaluate", help="score runs.jsonl.gz with ranx and write the tables")
    e.add_argument("runs")
    e.add_argument("--note", default="")
    args = ap.parse_args(argv)
    return train_rows(args) if args.cmd == "train" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
