"""A Ray scoring driver run as a real subprocess by ``tests/test_score_ray.py`` (it, or one of its
Ray workers, gets killed with SIGKILL).

Usage: python -m tests.ray_worker DATASET_DIR ROOT DELAY LOG [WORKERS]

Scores the pairs of :func:`tests.store_worker.run` (every query with every document, one query
per chunk, the same store) on a local Ray with WORKERS (default 2) workers. Each worker's teacher
sleeps DELAY seconds per chunk and first appends ``<pid> <qid>`` to LOG, so the parent knows
which worker process holds which chunk, and which chunks were scored twice.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from retrieval_kd.data.registry import load_dataset
from retrieval_kd.scores.ray_scoring import RayTeacher
from retrieval_kd.scores.store import score_into_store
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.bm25 import BM25Teacher
from tests.store_worker import IDENTITY, all_pairs


class LoggingSlowTeacher(Teacher):
    """BM25 that records which process scores which query, then takes its time."""

    def __init__(self, delay: float, log: str) -> None:
        self.inner, self.delay, self.log = BM25Teacher(), delay, log

    def identity(self):
        return IDENTITY

    def prepare(self, corpus) -> None:
        self.inner.prepare(corpus)

    def score(self, pairs: list[Pair]) -> np.ndarray:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {pairs[0].qid}\n")
        time.sleep(self.delay)
        return self.inner.score(pairs)


def run(dataset_dir: str, root: str, delay: float, log: str, workers: int = 2):
    ds = load_dataset(dataset_dir, "test")
    teacher = RayTeacher(lambda: LoggingSlowTeacher(delay, log), "local", workers)
    return score_into_store(ds, all_pairs(ds), lambda: teacher, IDENTITY, root, chunk_size=len(ds.corpus))


if __name__ == "__main__":
    a = sys.argv[1:]
    store = run(a[0], a[1], float(a[2]), a[3], *(int(x) for x in a[4:5]))
    print(f"done {store.path}", flush=True)
