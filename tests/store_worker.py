"""A scoring worker run as a real subprocess by the store tests (it gets killed with SIGKILL).

Usage: python -m tests.store_worker DATASET_DIR ROOT DELAY [SHARD_I SHARD_N]

Scores every (query, document) pair of the tiny dataset with BM25, one query per chunk,
sleeping DELAY seconds per chunk so the parent can kill it mid-way. Prints one line per
finished chunk so the parent knows how far it got.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from retrieval_kd.data.registry import load_dataset
from retrieval_kd.scores.candidates import Candidate
from retrieval_kd.scores.store import score_into_store
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.bm25 import BM25Teacher

IDENTITY = {"kind": "bm25", "k1": 0.9, "b": 0.4, "test": "store-worker"}


class SlowTeacher(Teacher):
    """BM25 that takes its time and says when each batch is done."""

    def __init__(self, delay: float) -> None:
        self.inner, self.delay, self.calls = BM25Teacher(), delay, 0

    def identity(self):
        return IDENTITY

    def prepare(self, corpus) -> None:
        self.inner.prepare(corpus)

    def score(self, pairs: list[Pair]) -> np.ndarray:
        time.sleep(self.delay)
        self.calls += 1
        print(f"scored {len(pairs)}", flush=True)
        return self.inner.score(pairs)


def all_pairs(ds) -> list[Candidate]:
    return [Candidate(q, d, r, ds.qrels.get(q, {}).get(d))
            for q in ds.queries.ids() for r, d in enumerate(ds.corpus.ids(), 1)]


def run(dataset_dir: str, root: str, delay: float, shard: tuple[int, int] | None = None):
    ds = load_dataset(dataset_dir, "test")
    cands = all_pairs(ds)
    chunk = len(ds.corpus)  # one query per chunk
    return score_into_store(ds, cands, lambda: SlowTeacher(delay), IDENTITY, root,
                            chunk_size=chunk, shard=shard)


if __name__ == "__main__":
    a = sys.argv[1:]
    shard = (int(a[3]), int(a[4])) if len(a) > 3 else None
    store = run(a[0], a[1], float(a[2]), shard)
    print(f"done {store.path}", flush=True)
