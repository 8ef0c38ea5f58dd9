"""Sharded dense search: several indexes (or blocks of vectors) searched one by one, their top-k
merged by score.

:func:`merge_topk` keeps the best ``k`` of per-shard results (ties: the earlier shard, then its
own order, as one index over the concatenated rows would rank them); :func:`exact_topk` is
exact inner-product search over row blocks (memory-mapped chunks: one block in memory at a
time), the ground truth of an approximate index of vectors that do not fit in memory;
:class:`ShardedSearcher` searches index folders built separately (e.g. one per slice of a
corpus, each with its own ``doc_ids.json``) as one index, answering document ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MISSING = -1
"""faiss's id of an empty result slot."""


def merge_topk(parts: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of ``(scores, ids)`` pairs of shape ``[queries, k_i]`` (ids already global;
    ``-1``: no result), per query, best first; ``(scores [q, k], ids [q, k])``, padded with
    ``-inf`` / ``-1`` when there are fewer than ``k`` results."""
    scores = ids = None
    for s, i in parts:
        s = np.where(np.asarray(i) == MISSING, -np.inf, np.asarray(s, dtype=np.float32))
        i = np.asarray(i, dtype=np.int64)
        scores = s if scores is None else np.concatenate([scores, s], axis=1)
        ids = i if ids is None else np.concatenate([ids, i], axis=1)
        if scores.shape[1] > k:  # keep the running best k only
            scores, ids = _best(scores, ids, k)
    if scores is None:
        raise ValueError("no shards to merge")
    scores, ids = _best(scores, ids, min(k, scores.shape[1]))
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=MISSING)
    return scores, np.where(np.isneginf(scores), MISSING, ids)


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def exact_topk(blocks: Iterable[np.ndarray], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` over row blocks (ids: row numbers across the blocks)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)

    def parts():
        offset = 0
        for block in blocks:
            b = np.asarray(block, dtype=np.float32)
            s = q @ b.T
            top = min(k, len(b))
            idx = np.argpartition(-s, top - 1, axis=1)[:, :top] if top < len(b) else np.tile(np.arange(len(b)), (len(q), 1))
            yield np.take_along_axis(s, idx, 1), idx + offset
            offset += len(b)
    return merge_topk(parts(), k)


class ShardedSearcher:
    """Index folders of one family (see :class:`~retrieval_kd.index.search.Searcher`) searched
    as one: each shard's top-k, merged by score, as ``(doc id, score)`` lists."""

    def __init__(self, folders: Sequence[str | Path], overrides: dict[str, Any] | None = None) -> None:
        from retrieval_kd.errors import RkdError
        from retrieval_kd.index.search import Searcher

        if not folders:
            raise RkdError("a sharded search needs at least one index folder")
        self.shards = [Searcher(f, overrides) for f in folders]
        families = {s.family for s in self.shards}
        if len(families) > 1:
            raise RkdError(f"the shards are indexes of different families ({', '.join(sorted(families))})")
        encoders = {s.manifest["inputs"]["encoder"].get("model", {}).get("sha256") for s in self.shards}
        if len(encoders) > 1:
            raise RkdError("the shards were encoded by different models: their scores cannot be merged")
        self.offsets = np.cumsum([0] + [len(s.doc_ids) for s in self.shards])
        self.doc_ids = [d for s in self.shards for d in s.doc_ids]

    def search(self, q, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query representation's merged top-``k``: (global doc numbers, scores)."""
        parts = []
        for shard, off in zip(self.shards, self.offsets):
            docs, scores, _ = shard.search(q, k)
            docs = np.asarray(docs, dtype=np.int64).reshape(1, -1)
            parts.append((np.asarray(scores, dtype=np.float32).reshape(1, -1), np.where(docs >= 0, docs + off, MISSING)))
        scores, ids = merge_topk(parts, k)
        keep = ids[0] != MISSING
        return ids[0][keep], scores[0][keep]

    def search_ids(self, q, k: int) -> list[tuple[str, float]]:
        docs, scores = self.search(q, k)
        return [(self.doc_ids[int(d)], float(s)) for d, s in zip(docs, scores)]
