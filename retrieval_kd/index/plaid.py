"""PLAID-style ColBERT search: centroid pruning on the token IVF, exact MaxSim on the survivors.

fast-plaid (the engine PyLate uses) is not used: each of its wheels is built against one exact
torch release (the newest, 1.7.0.2110, pins torch 2.11.0; this project runs 2.13) and the
mismatched wheel crashes (SIGSEGV) in its first call. This is the same idea on faiss and
torch, over the files every ColBERT index has: ``tokens.npy`` (float16 token vectors grouped
by document) and ``candidates.faiss``, an IVF-PQ index over the same vectors (k-means
centroids: ``nlist``; residual codes: ``pq_m`` sub-quantizers of ``pq_nbits`` bits, PLAID's
"nbits"). A ``plaid`` index is built with fewer lists (:func:`plaid_nlist`) and 4-bit
fast-scan codes (faiss ``IndexIVFPQFastScan``, ``dim/4`` sub-quantizers: as many bytes per
token as the exact engine's 8-bit ``dim/8``), which scan several times faster.

Per query (the ``plaid`` engine; ``exact`` is :meth:`retrieval_kd.index.late.LateIndex.search`):

1. Candidate generation: every query token is scored against every centroid (torch) and probes
   its ``nprobe`` best (a centroid scoring below ``centroid_score_threshold``, when set, is not
   probed: PLAID's centroid pruning); on those lists it keeps its ``k_token`` best document
   tokens, scored from their residual codes. The owners of those tokens are the candidates.
2. Candidate pruning (XTR's estimate): a candidate's estimate is the sum over query tokens of
   its best retrieved token's score; a query token that retrieved none of its tokens counts as
   that token's ``k_token``-th score (nothing below it was seen). The best ``nfull`` survive.
3. Exact MaxSim over the survivors' float16 token vectors (float32 arithmetic, as the exact
   engine scores them); the top ``k`` kept.

When ``k`` exceeds ``nfull`` the ranking goes on with the other candidates in estimate order,
with scores set below the last exact one (falling by the estimates' gaps): ranks ``1..nfull``
are MaxSim scores, the ones after them an ordering by estimates.

The ``exact`` engine scores every candidate exactly, and its candidates are only the ``k_token``
(default 32) best tokens per query token; ``plaid`` looks further (``k_token`` 192) and scores
exactly only the ``nfull`` most promising candidates. On SciFact test (k=100, one thread) with
the main job's seven BERT-tiny ColBERT models: 11.3-13.1x the exact engine's QPS (2.0-2.6 ms
a query against 26-30 ms), nDCG@10 +0.001 to +0.014 (mean +0.008), recall@100 +0.019 on
average (``eval/bench_colbert_engines.py``, ``eval/results/bench-colbert-engines.md``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval_kd.index.faiss_index import auto_nlist
from retrieval_kd.index.late import token_rows
from retrieval_kd.retrieve.topk import ranked

Engine = Literal["exact", "plaid"]
ENGINES: tuple[str, ...] = ("exact", "plaid")
SEARCH_KEYS = ("nprobe", "k_token", "nfull", "centroid_score_threshold")


def plaid_nlist(n_tokens: int) -> int:
    """Centroids of a ``plaid`` index: half the IVF default, ``2*sqrt(tokens)`` as a power of two
    (at most ``tokens/39``). Fewer, longer lists: the coarse step (every query token against
    every centroid) is a large fixed cost of a query; on SciFact 3 of 2048 lists probed gave
    the nDCG@10 of 4 of 4096, 30% faster."""
    return max(1, auto_nlist(n_tokens) // 2)


class PlaidParams(BaseModel):
    """The ``plaid`` engine's default search budget (``rkd search`` can override each).

    ``nfull=None`` is resolved from the corpus size when the index is built and the manifest
    records the resolved value: ``min(docs, max(32, round(sqrt(docs) / 4)))`` (32 up to 16k
    documents, 250 at a million).
    """

    model_config = ConfigDict(extra="forbid")
    nprobe: int = Field(3, gt=0, description="centroids probed per query token")
    k_token: int = Field(192, gt=0, description="document tokens kept per query token")
    nfull: int | None = Field(None, gt=0, description="candidates scored by exact MaxSim")
    centroid_score_threshold: float | None = Field(
        None, description="centroids scoring below this for a query token are not probed by it")


def resolve_plaid(params: PlaidParams, n_docs: int) -> PlaidParams:
    nfull = params.nfull or min(max(n_docs, 1), max(32, round(math.sqrt(max(n_docs, 0)) / 4)))
    return params.model_copy(update={"nfull": nfull})


def _torch_view(a: np.ndarray):
    """A torch tensor over ``a`` without a copy (a read-only memory map included: never written)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "The given NumPy array is not writable"
        return torch.from_numpy(a)


def maxsim_torch(q, tokens_t, offsets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Exact MaxSim of the query matrix ``q`` (torch float32) against ``docs``: the float16 token
    vectors in float32 arithmetic, as :func:`~retrieval_kd.index.late.maxsim` computes it (torch
    converts float16 several times faster than numpy). Documents without tokens score 0."""
    import torch

    docs = np.asarray(docs, dtype=np.int64)
    out = np.zeros(len(docs), dtype=np.float32)
    rows, lens = token_rows(offsets, docs)
    nz = lens > 0
    if not nz.any():
        return out
    d = tokens_t.index_select(0, torch.from_numpy(rows)).float()
    s = (q @ d.T).numpy()  # (query tokens, rows)
    out[nz] = np.maximum.reduceat(s, (np.cumsum(lens) - lens)[nz], axis=1).sum(axis=0)
    return out


class PlaidSearch:
    """The ``plaid`` engine over an opened late-interaction index (token vectors + token IVF)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, ivf, params: dict[str, Any]) -> None:
        import faiss

        from retrieval_kd.errors import RkdError

        try:
            self.ivf = faiss.extract_index_ivf(ivf)
        except RuntimeError:
            raise RkdError("the plaid engine needs an IVF candidate index (built with --cand-index ivfpq)") from None
        self.index = ivf  # owns the IVF view above: faiss frees it with its last Python reference
        self.tokens_t = _torch_view(tokens)
        self.offsets = offsets
        self.params = dict(params)
        # the coarse step in torch (faster than the flat quantizer's own search for a few dozen rows)
        self.centroids = _torch_view(self.ivf.quantizer.reconstruct_n(0, self.ivf.nlist))

    def candidates(self, q: np.ndarray, nprobe: int, k_token: int, thr: float | None):
        """Each query token's ``k_token`` best tokens on its probed lists: (scores, token rows)."""
        import torch

        nprobe = min(nprobe, self.ivf.nlist)
        cd, ci = torch.topk(torch.from_numpy(q) @ self.centroids.T, nprobe, dim=1)
        cd, ci = cd.numpy(), ci.numpy().astype(np.int64)
        if thr is not None:
            ci[cd < thr] = -1  # pruned centroids are not probed
        self.ivf.nprobe = nprobe
        return self.ivf.search_preassigned(q, k_token, ci, cd)

    def estimates(self, q: np.ndarray, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1-2 for the float32 query matrix ``q``: the candidates and their XTR estimates."""
        import torch

        nq = len(q)
        tok_scores, tok_rows = self.candidates(q, int(p["nprobe"]), int(p["k_token"]),
                                               p.get("centroid_score_threshold"))
        found = tok_rows >= 0
        if not found.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # a query token's k_token-th score (its lowest found): what a token it did not retrieve may reach
        floor = np.where(found, tok_scores, np.inf).min(axis=1, keepdims=True)
        docs_of = np.searchsorted(self.offsets, tok_rows[found], side="right") - 1
        cand, inv = np.unique(docs_of, return_inverse=True)
        qtok = np.broadcast_to(np.arange(nq)[:, None], tok_rows.shape)[found]
        gain = torch.zeros(len(cand) * nq)
        gain.scatter_reduce_(0, torch.from_numpy(inv.astype(np.int64) * nq + qtok),
                             torch.from_numpy((tok_scores - floor)[found].astype(np.float32)), "amax")
        return cand, gain.view(len(cand), nq).sum(1).numpy()

    def search(self, q: np.ndarray, k: int, overrides: dict[str, Any] | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Top-``k`` (doc numbers, scores) and the counts: candidates, exactly scored."""
        import torch

        p = {**self.params, **(overrides or {})}
        q = np.ascontiguousarray(q, dtype=np.float32)
        cand, est = self.estimates(q, p) if len(q) and k > 0 else (np.zeros(0, np.int64), None)
        if len(cand) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), {"candidates": 0, "exact_scored": 0}
        order = ranked(cand, est)
        full = cand[order[:int(p["nfull"])]]
        exact = maxsim_torch(torch.from_numpy(q), self.tokens_t, self.offsets, full)
        top = ranked(full, exact)[:k]
        docs, scores = full[top], exact[top]
        if len(docs) < k and len(order) > len(full):  # the rest of the ranking, in estimate order
            rest = order[len(full):len(full) + k - len(docs)]
            last = float(scores[-1]) if len(scores) else 0.0
            gaps = (est[rest[0]] - est[rest]).astype(np.float64) + 1e-4 * np.arange(len(rest))
            tail = (last - 1e-3) - gaps  # strictly falling, also in float32
            docs = np.concatenate([docs, cand[rest]])
            scores = np.concatenate([scores, tail.astype(np.float32)])
        return docs, scores, {"candidates": len(cand), "exact_scored": len(full)}
