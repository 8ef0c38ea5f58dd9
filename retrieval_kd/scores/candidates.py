"""Candidate lists: each query's top-k from a first-stage run, qrels positives optionally forced in."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from retrieval_kd.artifacts import sha256_records
from retrieval_kd.data.trec import sorted_hits
from retrieval_kd.data.types import Dataset, Run


@dataclass(frozen=True)
class Candidate:
    qid: str
    docid: str
    rank: int | None
    """1-based rank in the run; None for a positive that was forced in."""
    label: int | None
    """qrels grade; None when unjudged."""


def build_candidates(ds: Dataset, run: Run, top_k: int, add_positives: bool = False) -> list[Candidate]:
    """Candidates in query order (the dataset's), then run rank; forced positives last. Only the
    run's queries: a query the run leaves out gets no candidates, forced positives included."""
    out: list[Candidate] = []
    for qid in ds.queries.ids():
        if qid not in run:
            continue
        judged = ds.qrels.get(qid, {})
        seen = set()
        for r, (did, _) in enumerate(sorted_hits(run[qid])[:top_k], 1):
            if did in ds.corpus.docs:
                out.append(Candidate(qid, did, r, judged.get(did)))
                seen.add(did)
        if add_positives:
            out.extend(Candidate(qid, d, None, g) for d, g in judged.items()
                       if g > 0 and d not in seen and d in ds.corpus.docs)
    return out


def shard_of(qid: str, n: int) -> int:
    """Stable shard of a query (crc32 of its id), so shards never split a query."""
    return zlib.crc32(qid.encode()) % n


def select_shard(cands: list[Candidate], shard: tuple[int, int] | None) -> list[Candidate]:
    if shard is None:
        return cands
    i, n = shard
    return [c for c in cands if shard_of(c.qid, n) == i]


def candidates_fingerprint(cands: list[Candidate]) -> str:
    return sha256_records((c.qid, c.docid) for c in cands)


def query_chunks(cands: list[Candidate], chunk_size: int) -> list[tuple[int, int]]:
    """Split into [start, end) ranges of about ``chunk_size`` pairs, never splitting a query."""
    bounds, start = [], 0
    for i in range(1, len(cands) + 1):
        boundary = i == len(cands) or cands[i].qid != cands[i - 1].qid
        if boundary and (i - start >= chunk_size or i == len(cands)):
            bounds.append((start, i))
            start = i
    return bounds
