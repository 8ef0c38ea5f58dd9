"""Consistency filtering of generated queries (InPars, Promptagator): keep a query only if a
teacher ranks the passage it was written for within the top ``top_k`` of its candidates.

The teacher's ranking is a run (TREC file, or a stage/run folder holding ``run.trec``) over the
generated dataset's split, e.g. a score stage's run (the teacher reranking a first stage's
candidates; with ``add_positives`` the source passage is always among them). A query the run
does not rank at all, or whose passage is not among its candidates, is dropped too (counted
apart). The result is the same BEIR folder with only the kept queries and their qrels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import atomic_dir, manifest, read_manifest, sha256_file, write_json
from retrieval_kd.errors import RkdError
from retrieval_kd.queries.generate import GENERATED

FILTER_REASONS = ("not_ranked", "not_in_candidates", "below_top_k")


def source_rank(run: dict[str, float], docid: str) -> int | None:
    """1-based rank of ``docid`` in one query's run (ties: by doc id, like TREC tools)."""
    if docid not in run:
        return None
    order = sorted(run.items(), key=lambda x: (-x[1], x[0]))
    return next(i for i, (d, _) in enumerate(order, 1) if d == docid)


def run_file(path: str | Path) -> Path:
    from retrieval_kd.data.runfiles import run_path

    p = run_path(path)
    if not p.is_file():
        raise RkdError(f"{path}: no run file there")
    return p


def filter_queries(dataset: str | Path, split: str, run: str | Path, top_k: int, out: str | Path) -> dict[str, Any]:
    """Write ``out``: ``dataset`` (a generated BEIR folder) keeping the queries whose source
    passage ``run`` ranks within ``top_k``. Returns the manifest."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run

    if top_k < 1:
        raise RkdError(f"top_k must be at least 1 (got {top_k})")
    src = Path(dataset)
    ds = load_dataset(str(src), split)
    rf = run_file(run)
    ranked = load_trec_run(rf)
    stray = set(ranked) - set(ds.qrels)
    if ranked and len(stray) == len(ranked):
        raise RkdError(f"{rf}: none of its queries is a query of {src}/{split} (a run of another dataset?)")
    kept: dict[str, int] = {}
    dropped = {r: 0 for r in FILTER_REASONS}
    fate: dict[str, str] = {}
    for qid, judged in ds.qrels.items():
        sources = [d for d, g in judged.items() if g > 0]
        if qid not in ranked:
            why = "not_ranked"
        else:
            ranks = [r for d in sources if (r := source_rank(ranked[qid], d)) is not None]
            if not ranks:
                why = "not_in_candidates"
            elif min(ranks) > top_k:
                why = "below_top_k"
            else:
                kept[qid] = min(ranks)
                fate[qid] = f"rank {min(ranks)}"
                continue
        dropped[why] += 1
        fate[qid] = why
    if not kept:
        raise RkdError(f"no query kept: the run ranks no source passage within the top {top_k} "
                       f"({', '.join(f'{k} {v}' for k, v in dropped.items() if v)})")
    out = Path(out)
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)
        shutil.copyfile(src / "corpus.jsonl", tmp / "corpus.jsonl")
        with open(src / "queries.jsonl", encoding="utf-8") as f, \
                open(tmp / "queries.jsonl", "w", encoding="utf-8") as g:
            for line in f:
                if line.strip() and json.loads(line)["_id"] in kept:
                    g.write(line)
        (tmp / "qrels").mkdir()
        (tmp / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q in kept
                                                       for d, g in ds.qrels[q].items()), encoding="utf-8")
        if (src / GENERATED).is_file():  # the generation record, each query's filter fate added
            rows = [json.loads(x) for x in (src / GENERATED).read_text(encoding="utf-8").splitlines() if x]
            for r in rows:
                if r.get("query_id"):
                    r["filter"] = fate.get(r["query_id"], "not_in_split")
            (tmp / GENERATED).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                         encoding="utf-8")
        man = manifest(
            "queries.filter",
            inputs={"dataset": str(src), "split": split, "dataset_manifest": read_manifest(src),
                    "run": str(rf), "run_sha256": sha256_file(rf)},
            params={"top_k": top_k, "rule": "keep a query whose source passage the run ranks within top_k"},
            outputs={"split": split, "queries": len(ds.qrels), "kept": len(kept), "dropped": dropped,
                     "mean_source_rank": round(sum(kept.values()) / len(kept), 3)},
        )
        write_json(tmp / "manifest.json", man)
    return man
