"""Revision 13 (PLAN.md): a BEIR folder with SciFact's corpus, its train queries and qrels, and
1,000 title pseudo-queries (a seeded sample of the documents with a title; each judged relevant
to its source document), and the pipeline that scores its train split with the main job's teacher.

    python research/compression/pseudo_titles.py build runs/compression/pq-beir
    rkd run research/compression/pq.yaml      # BM25 top-20 + positives, the ensemble's store

Pseudo-query ids are ``pq-<docid>``; every other query id is SciFact's own.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "scifact"
N_QUERIES, SEED = 1000, 42
PREFIX = "pq-"


def build(out: Path, source: Path = SOURCE, n: int = N_QUERIES, seed: int = SEED) -> dict[str, int]:
    docs = [json.loads(line) for line in (source / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    titled = [d for d in docs if d.get("title", "").strip()]
    picked = sorted(random.Random(seed).sample(range(len(titled)), min(n, len(titled))))
    pseudo = [{"_id": PREFIX + titled[i]["_id"], "text": titled[i]["title"].strip()} for i in picked]
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "corpus.jsonl", out / "corpus.jsonl")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for line in (source / "queries.jsonl").open(encoding="utf-8"):
            if line.strip():
                f.write(line.rstrip("\n") + "\n")
        for q in pseudo:
            f.write(json.dumps(q) + "\n")
    train = (source / "qrels" / "train.tsv").read_text(encoding="utf-8").rstrip("\n") + "\n"
    train += "".join(f"{q['_id']}\t{q['_id'][len(PREFIX):]}\t1\n" for q in pseudo)
    (out / "qrels" / "train.tsv").write_text(train, encoding="utf-8")
    return {"docs": len(docs), "titled": len(titled), "pseudo_queries": len(pseudo)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    args = ap.parse_args()
    print(build(Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
