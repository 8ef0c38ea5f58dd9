"""Cross-lingual baselines: BM25 and all-MiniLM-L6-v2 on XQuAD-R X->en and MS MARCO ko-en.

    python -m eval.xling_eval [--out eval/results/xling-baselines] [--model minilm-l6]

Datasets (through the registry, so ``RKD_DATA_HOME`` must hold ``xquad-r/`` and ``msmarco-ko/``):

* ``xquad-r:<X>-en`` for the 10 non-English languages and ``en-en``: 1,190 questions against
  the 240 English paragraphs, one relevant paragraph each. With 240 candidates R@100 is
  nearly trivial; nDCG@10 and MRR@10 carry the signal.
* ``msmarco-ko:ko-en`` (Korean queries, English passages) and ``en-en`` as the reference:
  6,980 dev-small queries against the pool of the 6,978 judged positives only (a small pool:
  not comparable with full MS MARCO numbers).

Systems: BM25 (bm25s, Lucene variant, k1=0.9, b=0.4, English stemmer and stopwords: one
English index over the passages, queries in any language tokenized the same way) and
all-MiniLM-L6-v2 (exact cosine search). Both are English-only: on non-English queries they
score only through shared tokens (numbers, names, Latin-script words), so low numbers there
are what these baselines really do, not a bug. No subsampling: everything is evaluated.

Writes ``<out>.json`` (every result with its protocol: dataset fingerprints, model sha256,
parameters, metric definitions, timings) and ``<out>.md`` (tables).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from statistics import mean
from typing import Any

from retrieval_kd.artifacts import atomic_write_text, now_iso, write_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.types import Dataset, Run
from retrieval_kd.eval.metrics import evaluate_run
from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.retrieve.bm25 import BM25Index, BM25Params
from retrieval_kd.retrieve.dense import DenseParams, encode_texts, load_encoder
from retrieval_kd.retrieve.topk import topk_run
from retrieval_kd.xling.xquad_r import XQUAD_R_LANGS

K = 100
XQUAD_METRICS = ["ndcg@10", "mrr@10", "recall@100"]
MSMARCO_METRICS = ["ndcg@10", "mrr@10", "recall@100"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Systems:
    """BM25 and the dense model, each index/embedding built once per passage set."""

    def __init__(self, model: str, dense: DenseParams, bm25: BM25Params) -> None:
        self.dense_params, self.bm25_params = dense, bm25
        self.ref = resolve_model(model)
        self.st = load_encoder(self.ref, dense)
        self._corpus_key: str | None = None
        self.timings: dict[str, float] = {}

    def _tick(self, key: str, t0: float) -> None:
        self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - t0, 2)

    def index(self, ds: Dataset) -> None:
        if self._corpus_key == ds.corpus.fingerprint:
            return
        t0 = time.perf_counter()
        self.bm25 = BM25Index(ds.corpus, self.bm25_params)
        self._tick("bm25_index_s", t0)
        t0 = time.perf_counter()
        self.doc_ids = ds.corpus.ids()
        self.doc_emb = encode_texts(self.st, ds.corpus.texts(self.dense_params.title_sep), self.dense_params)
        self._tick("encode_passages_s", t0)
        self._corpus_key = ds.corpus.fingerprint

    def run(self, ds: Dataset) -> dict[str, Run]:
        self.index(ds)
        t0 = time.perf_counter()
        bm25 = self.bm25.search(ds.queries, k=K)
        self._tick("bm25_search_s", t0)
        t0 = time.perf_counter()
        q = encode_texts(self.st, list(ds.queries.texts.values()), self.dense_params)
        dense = topk_run(self.doc_ids, self.doc_emb, ds.queries.ids(), q, K)
        self._tick("encode_queries_and_search_s", t0)
        return {"bm25": bm25, "minilm-l6": dense}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            "bm25": {"implementation": f"bm25s {version('bm25s')}", **self.bm25_params.model_dump()},
            "minilm-l6": {"model": self.ref.provenance(), "max_seq_length": self.st.max_seq_length,
                          "index": "faiss.IndexFlatIP (exact)", **self.dense_params.model_dump()},
        }


def evaluate(ds: Dataset, runs: dict[str, Run], metrics: list[str], group: str) -> list[dict[str, Any]]:
    out = []
    for system, run in runs.items():
        m = evaluate_run(ds.qrels, run, metrics)
        out.append({"group": group, "dataset": ds.name, "split": ds.split, "system": system,
                    "metrics": {k: round(v, 4) for k, v in m.items()},
                    "protocol": {**ds.protocol(), "metrics": metrics, "run_depth": K,
                                 "judged_queries": len(ds.qrels), "run_queries": len(run),
                                 "ignore_identical_ids": True}})
        log(f"{ds.name:22s} {system:10s} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
    return out


def fmt_table(rows: list[dict[str, Any]], metrics: list[str], label: str, avg_over: list[str] | None = None) -> str:
    systems = list(dict.fromkeys(r["system"] for r in rows))
    by = {(r["dataset"], r["system"]): r["metrics"] for r in rows}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    head = f"| {label} | " + " | ".join(f"{s} {m}" for s in systems for m in metrics) + " |"
    lines = [head, "|---|" + "---:|" * (len(systems) * len(metrics))]
    for d in datasets:
        lines.append(f"| {d} | " + " | ".join(f"{by[(d, s)][m]:.4f}" for s in systems for m in metrics) + " |")
    if avg_over:
        vals = [f"{mean(by[(d, s)][m] for d in avg_over):.4f}" for s in systems for m in metrics]
        lines.append(f"| mean of {len(avg_over)} X-en | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="eval/results/xling-baselines")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    systems = Systems(args.model, DenseParams(batch_size=args.batch_size), BM25Params())
    records: list[dict[str, Any]] = []

    xq_names = [f"xquad-r:{lang}-en" for lang in XQUAD_R_LANGS if lang != "en"] + ["xquad-r:en-en"]
    for name in xq_names:
        ds = load_dataset(name, "test")
        records += evaluate(ds, systems.run(ds), XQUAD_METRICS, "xquad-r X->en")
    for name in ("msmarco-ko:ko-en", "msmarco-ko:en-en"):
        ds = load_dataset(name, "dev")
        records += evaluate(ds, systems.run(ds), MSMARCO_METRICS, "msmarco-ko")
    total = round(time.perf_counter() - t_start, 1)

    import torch

    protocol = {
        "script": "eval/xling_eval.py",
        "created": now_iso(),
        "run_depth": K,
        "evaluator": f"ranx {version('ranx')} (trec_eval definitions; ignore_identical_ids on, "
                     "no effect here: query and passage ids never coincide)",
        "systems": systems.describe(),
        "subsampling": "none: every query and passage is used",
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpu": platform.machine(),
                    "cpu_count": os.cpu_count(), "device": "cpu",
                    # other jobs on a shared machine stretch the timings: the load says how much
                    "load_average_1_5_15_at_end": [round(x, 1) for x in os.getloadavg()]},
        "timings_s": {**systems.timings, "total_s": total},
        "notes": [
            ("xquad-r:<X>-en: XQuAD-R questions in language X, the 240 English paragraphs as the pool, "
            "the question's own paragraph relevant (1 per query); ids are SQuAD question ids and "
            "en_<article>_<paragraph>."),
            ("msmarco-ko: MS MARCO passage dev-small, Korean by GPT-4o-mini translation; the pool is the "
            "6,978 judged positives only, so the task is far easier than full MS MARCO (8.8M passages)."),
            ("all-MiniLM-L6-v2 and the English BM25 analyzer are English-only: X->en numbers for non-Latin "
            "scripts measure little beyond shared numbers and names."),
        ],
    }
    out = Path(args.out)
    write_json(out.with_name(out.name + ".json"), {"protocol": protocol, "results": records})

    xq = [r for r in records if r["group"] == "xquad-r X->en"]
    mm = [r for r in records if r["group"] == "msmarco-ko"]
    model = systems.ref.provenance()
    md = [
        "# Cross-lingual baselines: BM25 and all-MiniLM-L6-v2",
        "",
        (f"Created {protocol['created']} by `eval/xling_eval.py` ({total:.0f} s on {torch.get_num_threads()} "
        f"CPU threads, 1-min load average {os.getloadavg()[0]:.1f} at the end). Evaluation: ranx {version('ranx')}, runs cut at depth {K}. No subsampling."),
        (f"BM25: bm25s {version('bm25s')}, Lucene BM25 k1=0.9 b=0.4, English stemmer and stopwords, one "
        "index over the passages for every query language. Dense: "
        f"`{model['hf_id']}` (weights sha256 `{(model['sha256'] or '?')[:12]}`), cosine, exact search, "
        f"max_seq_length {systems.st.max_seq_length}."),
        "",
        ("Both systems are English-only. On X->en they match only what the question shares with the "
        "English paragraph (numbers, names, Latin-script words), so the non-English rows are low by "
        "construction; they are the floor a cross-lingual student has to beat."),
        "",
        "## XQuAD-R, questions in X, 240 English paragraphs (1,190 questions each)",
        "",
        "R@100 over a pool of 240 paragraphs is close to trivial; read nDCG@10 and MRR@10.",
        "",
        fmt_table(xq, XQUAD_METRICS, "dataset",
                  avg_over=[f"xquad-r:{lang}-en" for lang in XQUAD_R_LANGS if lang != "en"]),
        "## MS MARCO dev-small, Korean queries over English passages (6,980 queries)",
        "",
        ("The pool is only the 6,978 judged positive passages (one relevant each), not the 8.8M-passage "
        "collection: numbers are far above full-MS MARCO ones and not comparable with them. "
        "en-en is the same task with the original English queries."),
        "",
        fmt_table(mm, MSMARCO_METRICS, "dataset"),
        ("Protocol (dataset fingerprints, model provenance, parameters, timings) in "
        f"`{out.name}.json`."),
        "",
    ]
    atomic_write_text(out.with_name(out.name + ".md"), "\n".join(md))
    log(f"wrote {out}.json and {out}.md in {total:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
