"""Revision 14's trained rows evaluated on the dev queries. Their first evaluation (study.py train)
searched the *test* queries through a split bug in study.py (fixed with this revision); those test
runs were dropped unread and every row is evaluated again here on the 158 dev queries.

    python research/compression/reeval_rev14.py     # runs/compression-rev14/rows-dev.jsonl.gz
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "research" / "distillation"))
sys.path.insert(0, str(HERE))

import bench_distill as bench  # noqa: E402
import seed_study  # noqa: E402
import study  # noqa: E402

WORK = HERE.parents[1] / "runs" / "compression-rev14"


def main() -> None:
    src, dst = WORK / "rows.jsonl.gz", WORK / "rows-dev.jsonl.gz"
    ds = seed_study.dev_split()
    done = {(r["arm"], r["seed"]) for r in map(json.loads, gzip.open(dst, "rt"))} if dst.is_file() else set()
    for r in map(json.loads, gzip.open(src, "rt")):
        if (r["arm"], r["seed"]) in done:
            continue
        t = time.time()
        model_dir = WORK / "dev" / f"{r['student']}--{r['arm']}--s{r['seed']}"
        r["run"], r["eval"] = bench.evaluate_model("colbert", str(model_dir), study.eval_cfg(r["student"]), ds)
        r["note"] = "evaluated on the dev queries (the first evaluation searched test: dropped unread)"
        with gzip.open(dst, "at", encoding="utf-8") as f:
            f.write(json.dumps(r) + "\n")
        print(r["arm"], r["seed"], f"{time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main()
