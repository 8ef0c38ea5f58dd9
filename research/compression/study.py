"""Compression-regime study: cheap students distilled from a teacher far above them, each against
its label-only twin (same queries, candidate pool, passages per row, epochs, batch and seed).

The plan, the arms and the decision rule are in PLAN.md (written before any number was seen).

    python research/compression/study.py train --store STORE --split dev  --seeds 42,43 --out OUT
    python research/compression/study.py train --store STORE --split test --seeds 42,43,44 --out OUT
    python research/compression/study.py evaluate OUT/rows.jsonl.gz --name NAME

``--split dev`` trains on SciFact train without its dev queries (one in five by the sha256 of
the query id, as research/distillation/seed_study.py) and evaluates on those; ``test`` trains on all of train and
evaluates on test. Each finished (student, arm, seed) row is appended to rows.jsonl.gz at once
(its run, training record and timings), so a stopped study keeps its rows and a rerun skips them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research" / "distillation"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # token_corpus (revision 14)
import bench_distill as bench  # noqa: E402
import seed_study  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# Students: family, init, train settings, eval settings (all encode 128 document tokens).
STUDENTS: dict[str, dict[str, Any]] = {
    "dense-tiny": {"family": "bi-encoder", "init": "splade-tiny",
                   "train": {"max_length": 128, "lr": 1e-4},
                   "eval": {"max_seq_length": 128}},
    "colbert-tiny": {"family": "colbert", "init": "splade-tiny",
                     "train": {"max_length": 128, "query_max_length": 32, "colbert_dim": 128, "lr": 1e-4},
                     "eval": {"query_length": 32, "document_length": 128}},
    "splade-tiny": {"family": "splade", "init": "splade-tiny",
                    "train": {"max_length": 128, "lr": 5e-5},
                    "eval": {"max_seq_length": 128}},
    # revision 12: a reranker of BM25's top-20 (pair length: a claim + 128 document tokens)
    "ce-tiny": {"family": "cross-encoder", "init": "splade-tiny",
                "train": {"max_length": 160, "lr": 1e-4},
                "eval": {"max_length": 160, "depth": 20}},
    "minilm": {"family": "bi-encoder", "init": "minilm-l6",
               "train": {"max_length": 128, "lr": 2e-5},
               "eval": {"max_seq_length": 128}},
}
# Shared by every row: positive + 7 candidates from BM25 ranks 2-20 per row, 16 rows a batch.
COMMON: dict[str, Any] = {"split": "train", "batch_size": 16, "warmup": 0.1, "rank_window": [2, 20],
                          "save_steps": 50, "logging_steps": 10, "epochs": 4}
# Arms. twin: InfoNCE on the qrels positive, its 7 negatives and the batch's (no teacher).
# kd-*: the teacher's scores over the same 8 passages; no teacher filter (it drops true hard
# negatives on SciFact's near-complete qrels), label correction (a judged positive the teacher
# scores below the row's best negative is raised to it + 1 z-unit).
ARMS: dict[str, dict[str, Any]] = {
    "twin": {"teacher": "none", "losses": "infonce", "negatives": 7},
    "kd-kl": {"losses": "kl", "kl_passages": 8, "filter_margin": None, "positive_floor": 1.0},
    "kd-kl+infonce": {"losses": "kl:1.0+infonce:1.0", "kl_passages": 8, "filter_margin": None,
                      "positive_floor": 1.0},
    # SPLADE diagnostics (issue 16 point 4: why SPLADE distillation loses to its init): the
    # same arms with the FLOPS regularisers off
    # dev revision 1 (after seed 42's dense-tiny rows: the KL term at teacher_scale 0.05 swamped
    # InfoNCE, whose in-batch loss rose to chance): a softer teacher on the cosine student's scale
    "kd-kl+infonce-soft": {"losses": "kl:1.0+infonce:1.0", "kl_passages": 8, "filter_margin": None,
                           "positive_floor": 1.0, "teacher_scale": 0.01},
    # dev revision 2 (the softer teacher did not help: 0.1905): the KL term at a tenth of its weight
    "kd-kl0.1+infonce": {"losses": "kl:0.1+infonce:1.0", "kl_passages": 8, "filter_margin": None,
                         "positive_floor": 1.0},
    # dev revision 3 (InfoNCE rises to chance under any KL weight tried): pairwise Margin-MSE on
    # the same rows (Hofstaetter's loss; bounded gradients) beside InfoNCE, their gradients of
    # one size (MSE of margins x0.05 vs 0.05 x 20 x (p - y))
    "kd-mm+infonce": {"losses": "margin-mse:1.0+infonce:0.05", "kl_passages": 8, "negatives": 7,
                      "filter_margin": None, "positive_floor": 1.0},
    # SPLADE diagnostic at bench-distill's cost (1 epoch, 4 passages; its KL row lost 0.021 to the
    # init on test while halving the documents' non-zeros, 248 -> 119): FLOPS regularisers on/off
    "kd-kl-1ep": {"losses": "kl", "kl_passages": 4, "filter_margin": None, "positive_floor": 1.0,
                  "epochs": 1},
    "kd-kl-noreg-1ep": {"losses": "kl", "kl_passages": 4, "filter_margin": None, "positive_floor": 1.0,
                        "epochs": 1, "splade_query_weight": 0.0, "splade_doc_weight": 0.0},
    # revision 5 (dev only): the main job trains one epoch; the same two arms at one epoch
    "twin-1ep": {"teacher": "none", "losses": "infonce", "negatives": 7, "epochs": 1},
    "kd-kl+infonce-1ep": {"losses": "kl:1.0+infonce:1.0", "kl_passages": 8, "filter_margin": None,
                          "positive_floor": 1.0, "epochs": 1},
    # revision 6 (dev only): the learning rate at one epoch, per family and arm
    **{f"{arm}-1ep-lr{lr}": {**base, "epochs": 1, "lr": float(lr)}
       for lr in ("1e-4", "5e-4", "1e-3", "2e-3", "4e-3")  # 2e-3: revision 7; 4e-3: 8
       for arm, base in (("twin", {"teacher": "none", "losses": "infonce", "negatives": 7}),
                         ("kd-kl+infonce", {"losses": "kl:1.0+infonce:1.0", "kl_passages": 8,
                                            "filter_margin": None, "positive_floor": 1.0}),
                         # revision 12 (the cross-encoder): the KL term alone
                         ("kd-kl", {"losses": "kl", "kl_passages": 8, "filter_margin": None,
                                    "positive_floor": 1.0}))},
    # revision 9 (dev only): embedding distillation for the bi-encoder: the twin's rows exactly,
    # InfoNCE + W x cosine to all-MiniLM-L6-v2's PCA-rotated vectors of the same texts
    **{f"embed{w}-1ep-lr2e-3": {"teacher": "none", "losses": f"infonce:1.0+embed:{w}", "negatives": 7,
                                "epochs": 1, "lr": 2e-3,
                                "embed_teacher": {"kind": "bi-encoder", "model": "minilm-l6", "max_length": 128}}
       for w in ("1", "10")},
    # revision 10 (dev only): stage 1, the teacher's vectors of the unlabelled corpus (embed loss
    # alone, every corpus document, E epochs); stage 2, the twin's recipe from stage 1's weights
    **{f"corpus{e}-then-twin": {"stage1": {"teacher": "none", "losses": "embed", "embed_on": "corpus",
                                           "embed_teacher": {"kind": "bi-encoder", "model": "minilm-l6",
                                                             "max_length": 128},
                                           "batch_size": 64, "lr": 2e-3, "epochs": e, "warmup": 0.1,
                                           "max_length": 128, "save_steps": 500, "logging_steps": 10},
                                "then": "twin-1ep-lr2e-3"}
       for e in (1, 4)},
    # revision 11 (dev only): ColBERT around stage 1's body (the bi-encoder's stage 1 itself), then
    # ColBERT's twin recipe at its best rate
    "corpus4-then-twin-lr1e-3": {"stage1_of": "dense-tiny--corpus4-then-twin", "then": "twin-1ep-lr1e-3"},
    # revision 13 (dev only): ColBERT over the train queries + 1,000 title pseudo-queries the teacher
    # labels (pseudo_titles.py; --pq-store, --pq-folder): the QGen twin and the distilled recipe
    "pq-twin": {"teacher": "none", "losses": "infonce", "negatives": 7, "epochs": 1, "lr": 1e-3, "pq": True},
    "pq-kd": {"losses": "kl:1.0+infonce:1.0", "kl_passages": 8, "filter_margin": None, "positive_floor": 1.0,
              "epochs": 1, "lr": 1e-3, "pq": True},
    # revision 14 (dev only): ColBERT's own corpus stage, all-MiniLM-L6-v2's token vectors of every
    # corpus document (token_corpus.py), then the twin's or the distilled recipe at lr 1e-3
    "tok4-then-twin": {"stage1_token": True, "then": "twin-1ep-lr1e-3"},
    "tok4-then-kd": {"stage1_token": True, "then": "kd-kl+infonce-1ep-lr1e-3"},
    # revision 16 (dev only): the same with an 8-epoch token stage
    "tok8-then-kd": {"stage1_token": True, "token_epochs": 8, "then": "kd-kl+infonce-1ep-lr1e-3"},
    # revision 15 (dev only): why SPLADE distillation loses to its init. The diagnostic's KL row at
    # the init-matched teacher scale (splade_scale.py, read when the row is built), at lr 1e-5, and
    # a label-only row at its settings
    "kd-kl-1ep-scaled": {"losses": "kl", "kl_passages": 4, "filter_margin": None, "positive_floor": 1.0,
                         "epochs": 1, "teacher_scale": "splade-scale.json"},
    "kd-kl-1ep-lr1e-5": {"losses": "kl", "kl_passages": 4, "filter_margin": None, "positive_floor": 1.0,
                         "epochs": 1, "lr": 1e-5},
    "twin-1ep-n3": {"teacher": "none", "losses": "infonce", "negatives": 3, "epochs": 1},
    "twin-noreg": {"teacher": "none", "losses": "infonce", "negatives": 7,
                   "splade_query_weight": 0.0, "splade_doc_weight": 0.0},
    "kd-kl-noreg": {"losses": "kl", "kl_passages": 8, "filter_margin": None, "positive_floor": 1.0,
                    "splade_query_weight": 0.0, "splade_doc_weight": 0.0},
}
# Per family, where the KL temperature and the teacher's scale differ: a cosine student's logits
# are 20 x cosine (T = 0.05) and the teacher's z-score sums x0.05 are on that scale; the
# InfoNCE term is then weighted by T^2 so that neither term swamps the other.
FAMILY_KD = {
    "bi-encoder": {"temperature": 0.05, "teacher_scale": 0.05, "infonce_weight": 0.0025},
    "colbert": {"temperature": 1.0, "teacher_scale": 1.0, "infonce_weight": 1.0},
    "splade": {"temperature": 1.0, "teacher_scale": 1.0, "infonce_weight": 1.0},
    "cross-encoder": {"temperature": 1.0, "teacher_scale": 1.0, "infonce_weight": 1.0},  # unbounded logits, as MaxSim
}


def row_train(student: str, arm: str, seed: int) -> dict[str, Any]:
    """The TrainConfig fields of one row (store, output and dataset are added by the caller)."""
    s = STUDENTS[student]
    arm_cfg = dict(ARMS[arm])
    tr = {**COMMON, **s["train"]}
    if arm_cfg.get("teacher") != "none":  # the score-KD arms
        kd = FAMILY_KD[s["family"]]
        tr["temperature"], tr["teacher_scale"] = kd["temperature"], kd["teacher_scale"]
        kl_w, sep, rest = arm_cfg["losses"].partition("+infonce:1.0")
        if sep and not rest:  # InfoNCE at the family's weight (T^2 for the cosine student)
            arm_cfg["losses"] = f"{kl_w}+infonce:{kd['infonce_weight']}"
    if isinstance(arm_cfg.get("teacher_scale"), str):  # revision 15: a scale computed from train data
        arm_cfg["teacher_scale"] = json.loads((RESULTS / arm_cfg["teacher_scale"]).read_text())["teacher_scale"]
    return {**tr, **arm_cfg, "seed": seed}


def eval_cfg(student: str) -> dict[str, Any]:
    return {"init": STUDENTS[student]["init"], "eval": STUDENTS[student]["eval"]}


def done_rows(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return {(r["student"], r["arm"], r["seed"]) for r in map(json.loads, f)}


def train(args: argparse.Namespace) -> int:
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.store import ScoreStore

    store = Path(args.store)
    ScoreStore(store).manifest  # a missing or broken store fails before any output
    seeds = [int(s) for s in args.seeds.split(",")]
    students, arms = args.students.split(","), args.arms.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "rows.jsonl.gz"
    # the queries rows are evaluated on (the `else` below once hung off `if args.pq_store`, so a dev
    # study without pseudo-queries searched the test queries; revision 14 found it, see FINDINGS.md)
    ds = seed_study.dev_split() if args.split == "dev" else load_dataset(bench.DATASET, "test")
    if args.split == "dev":
        full = load_dataset(bench.DATASET, "train")
        keep = {q for q in full.queries.ids() if not seed_study.is_dev(q)}
        store = bench.scaled_store(store, 1.0, keep)  # the train store without the dev queries
    if args.pq_store:  # revision 13: the store over train + pseudo-queries, dev queries left out
        from retrieval_kd.data.registry import load_dataset as _load

        pq_ids = {q for q in _load(args.pq_folder, "train").queries.ids()
                  if q.startswith("pq-") or (args.split == "test" or not seed_study.is_dev(q))}
        args.pq_store = bench.scaled_store(Path(args.pq_store), 1.0, pq_ids, dataset=args.pq_folder)
    env = seed_study.environment()
    have = done_rows(dest)
    from retrieval_kd import embcache

    with embcache.use_root(Path(args.work) / "embeddings"):  # teacher vectors encoded once
        return _train_rows(args, students, arms, seeds, store, ds, env, have, dest)


def _train_rows(args, students, arms, seeds, store, ds, env, have, dest) -> int:
    from retrieval_kd.scores.store import ScoreStore
    from retrieval_kd.train.stage import train_stage

    def emit(rec: dict) -> None:
        with gzip.open(dest, "at", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    if args.with_init:
        for student in students:
            if (student, "init", None) in have:
                continue
            fam = STUDENTS[student]["family"]
            run, info = bench.evaluate_model(fam, None, eval_cfg(student), ds)
            emit({"student": student, "arm": "init", "seed": None, "split": args.split, "env": env,
                  "eval": info, "run": run})
            print(f"{student} init: {info}", flush=True)
            if fam == "cross-encoder":  # the first stage's own order of the candidates it reranks
                from retrieval_kd.data.trec import load_trec_run

                bm25 = load_trec_run(bench.bm25_run(ds.split.removesuffix("-dev"), 1000) / "run.trec")
                depth = STUDENTS[student]["eval"]["depth"]
                run = {q: dict(sorted(bm25.get(q, {}).items(), key=lambda x: (-x[1], x[0]))[:depth])
                       for q in ds.queries.ids()}
                emit({"student": student, "arm": "bm25-order", "seed": None, "split": args.split, "env": env,
                      "eval": {"depth": depth}, "run": run})
    for seed in seeds:
        for student in students:
            for arm in arms:
                if (student, arm, seed) in have:
                    continue
                fam = STUDENTS[student]["family"]
                model_dir = Path(args.work) / args.split / f"{student}--{arm}--s{seed}"
                init = STUDENTS[student]["init"]
                t0 = time.perf_counter()
                if ARMS[arm].get("stage1_token"):  # revision 14: ColBERT's token corpus stage
                    from token_corpus import train as token_stage

                    ep = ARMS[arm].get("token_epochs", 4)
                    first = model_dir.parent / f"{student}--tok{ep}--s{seed}--stage1"
                    init = str(token_stage(seed, first, Path(args.work), epochs=ep))
                    tr = row_train(student, ARMS[arm]["then"], seed)
                elif "then" in ARMS[arm]:  # a bi-encoder first stage without labels, then another arm's recipe
                    from retrieval_kd.train.config import load_config

                    of = ARMS[arm].get("stage1_of", f"{student}--{arm}")
                    first = model_dir.parent / f"{of}--s{seed}--stage1"
                    stage1 = ARMS[of.split("--")[1]]["stage1"]
                    train_stage(load_config(None, family="bi-encoder", init=init, dataset=bench.DATASET,
                                            split="train", output=str(first), seed=seed, **stage1), progress=False)
                    init, tr = str(first), row_train(student, ARMS[arm]["then"], seed)
                else:
                    tr = row_train(student, arm, seed)
                row_store = store
                if tr.pop("pq", False):
                    row_store, tr["dataset"] = args.pq_store, args.pq_folder
                cfg = bench.train_config(fam, init, row_store, model_dir, tr)
                train_stage(cfg, progress=False)
                train_s = time.perf_counter() - t0
                m = json.loads((model_dir / "manifest.json").read_text())
                run, info = bench.evaluate_model(fam, str(model_dir), eval_cfg(student), ds)
                emit({"student": student, "arm": arm, "seed": seed, "split": args.split, "env": env,
                      "store": ScoreStore(row_store).manifest["store_id"], "train_settings": {**tr, **({"stage1": ARMS[arm]} if "then" in ARMS[arm] else {})},
                      "train": {"steps": m["outputs"]["global_step"], "train_loss": m["outputs"]["train_loss"],
                                "examples": m["examples"], "train_s": round(train_s, 1)},
                      "eval": info, "run": run})
                print(f"{student} {arm} s{seed}: trained {train_s:.0f} s, eval {info}", flush=True)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """nDCG@10 per row with ranx; per student, each arm against the twin (paired over queries)."""
    import numpy as np

    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.eval.metrics import evaluate_run

    rows = {}
    for p in args.rows:
        with gzip.open(p, "rt", encoding="utf-8") as f:
            for r in map(json.loads, f):
                rows[(r["student"], r["arm"], r["seed"])] = r
    split = next(iter(rows.values()))["split"]
    ds = seed_study.dev_split() if split == "dev" else load_dataset(bench.DATASET, "test")
    groups: dict[str, dict[str, list[dict]]] = {}
    for (student, arm, seed), r in sorted(rows.items(), key=lambda x: str(x[0])):
        pq = evaluate_run(ds.qrels, r["run"], ["ndcg@10"], per_query=True)["ndcg@10"]
        m = evaluate_run(ds.qrels, r["run"], list(bench.METRICS))
        groups.setdefault(student, {}).setdefault(arm, []).append(
            {"seed": seed, "metrics": {k: round(float(v), 4) for k, v in m.items()}, "per_query": {"ndcg@10": pq},
             "train": r.get("train"), "eval": r.get("eval")})
    out = {"study": args.name, "split": split, "students": {}}
    md = [f"# {args.name}: compression regime, distilled vs label-only twin ({split})", "",
          "| student | arm | seeds | nDCG@10 per seed | mean | sd |", "|---|---|---|---|---:|---:|"]
    comp_lines = []
    for student, arms in groups.items():
        out["students"][student] = {}
        for arm, rs in arms.items():
            rs.sort(key=lambda x: (x["seed"] is not None, x["seed"]))
            v = [x["metrics"]["ndcg@10"] for x in rs]
            out["students"][student][arm] = [{k: x[k] for k in ("seed", "metrics", "train", "eval")} for x in rs]
            sd = f"{np.std(v, ddof=1):.4f}" if len(v) > 1 else ""
            md.append(f"| {student} | {arm} | {', '.join(str(x['seed']) for x in rs)} | "
                      f"{', '.join(f'{x:.4f}' for x in v)} | {np.mean(v):.4f} | {sd} |")
        pairs = dict(x.split("=", 1) if "=" in x else ("*", x) for x in args.twin.split(","))
        twin = pairs.get(student, pairs.get("*"))
        twin = twin if twin in arms else None
        if twin:
            for arm, rs in arms.items():
                if arm in (twin, "init", "bm25-order") or arm.startswith("twin"):
                    continue
                c = seed_study.seed_comparison({"twin": arms[twin], arm: rs}, "twin")[0]
                out["students"][student][f"{arm}-vs-twin"] = c
                comp_lines.append(f"- {student}: {arm} {c['mean']:.4f} vs twin {c['control_mean']:.4f}, "
                                  f"delta {c['delta']:+.4f} (per seed "
                                  f"{', '.join(f'{d:+.4f}' for d in c['per_seed_delta'])}), paired t-test over "
                                  f"{c['n_queries']} queries: p = {c['p_value']:.3g}")
    md += ["", *comp_lines]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--store", required=True, help="teacher store over SciFact train (BM25 top-20 + positives)")
    t.add_argument("--split", choices=("dev", "test"), required=True)
    t.add_argument("--students", default="dense-tiny,colbert-tiny,splade-tiny")
    t.add_argument("--arms", default="twin,kd-kl,kd-kl+infonce")
    t.add_argument("--seeds", default="42")
    t.add_argument("--with-init", action="store_true")
    t.add_argument("--pq-store", help="revision 13: the teacher's store over --pq-folder's train split")
    t.add_argument("--pq-folder", help="revision 13: the BEIR folder pseudo_titles.py built")
    t.add_argument("--out", required=True)
    t.add_argument("--work", default=str(ROOT / "runs" / "compression"))
    e = sub.add_parser("evaluate")
    e.add_argument("rows", nargs="+")
    e.add_argument("--name", required=True)
    e.add_argument("--twin", default="twin", help="the arm every other arm is compared with, or "
                   "STUDENT=ARM,... per student")
    args = ap.parse_args(argv)
    return train(args) if args.cmd == "train" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
