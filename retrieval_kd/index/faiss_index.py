"""FAISS indexes over inner product: flat (exact), HNSW and IVF-PQ (optionally refined).

A refined IVF-PQ index (faiss ``IndexRefine``) searches its PQ codes for ``refine_factor`` x k
candidates, then re-scores them from a second copy of the vectors (``refine``: ``flat``, the
float32 vectors, exact scores; ``sq8``, 8-bit codes, near-exact) and keeps the k best.

faiss-cpu is the default; when the GPU build is installed and sees a GPU, flat and IVF
indexes are trained / searched on it (HNSW has no GPU version and stays on the CPU).
Nothing here requires a GPU.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from retrieval_kd.errors import RkdError
from retrieval_kd.progress import console

IndexKind = Literal["flat", "hnsw", "ivfpq"]
RefineKind = Literal["none", "flat", "sq8"]


class IndexParamError(RkdError, ValueError):
    """Index parameters that cannot work together (reported as one line by the CLI)."""


class FaissParams(BaseModel):
    """Index type and its construction / search parameters (unused ones are ignored)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)  # docstrings: --help
    index: IndexKind = "flat"
    """Index type."""
    # HNSW
    hnsw_m: int = Field(32, gt=1)
    """HNSW: graph degree M."""
    ef_construction: int = Field(200, gt=0)
    """HNSW: efConstruction."""
    ef_search: int = Field(128, gt=0)
    """HNSW: default efSearch (search can override)."""
    # IVF-PQ
    nlist: int | None = Field(None, gt=0)
    """IVF-PQ: lists (default 4*sqrt(N), at most N/39)."""
    pq_m: int | None = Field(None, gt=0)
    """IVF-PQ: sub-quantizers (default dim/8, fast scan dim/4; must divide dim)."""
    pq_nbits: int = Field(8, gt=0, le=16)
    """IVF-PQ: bits per sub-quantizer code."""
    fast_scan: bool = False
    """IVF-PQ with faiss's SIMD fast-scan kernels (IndexIVFPQFastScan), 4-bit codes and CPU only.
    Scans lists several times faster (the plaid ColBERT engine's default)."""
    nprobe: int = Field(32, gt=0)
    """IVF-PQ: default lists probed (search can override)."""
    refine: RefineKind | None = None
    """IVF-PQ: re-score the PQ candidates from a stored copy of the vectors (faiss IndexRefine):
    flat (float32, exact scores, +4*dim bytes per vector), sq8 (8-bit, near-exact, +dim bytes) or
    none (PQ-approximate scores). Default: flat for a dense index, none for ColBERT's token index."""
    refine_factor: int = Field(16, ge=1, le=1024)
    """IVF-PQ refine: PQ candidates re-scored per result wanted (k_factor; search can override).
    16 reaches recall@10 0.95 of exact search on 1M x 128-d with the default 16-byte codes."""
    train_size: int | None = Field(None, gt=0)
    """IVF-PQ: training sample (default max(40*nlist, 50k))."""
    seed: int = 1234
    """IVF-PQ: seed of the training sample and k-means."""
    deterministic: bool = True
    """HNSW: single-threaded, reproducible graph build. Faiss's parallel HNSW insertion depends on
    thread timing, so only a one-thread build gives the same graph twice. Searching is
    multi-threaded."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """auto (GPU when faiss-gpu sees one) | cpu | gpu."""

    @model_validator(mode="after")
    def _check(self) -> FaissParams:
        if self.index == "ivfpq" and self.pq_nbits > 8 and self.device == "gpu":
            raise ValueError("GPU IVF-PQ supports pq_nbits <= 8")
        if self.fast_scan and (self.index != "ivfpq" or self.pq_nbits != 4):
            raise ValueError("fast_scan is an IVF-PQ kernel for 4-bit codes (index ivfpq, pq_nbits 4)")
        if self.fast_scan and self.device == "gpu":
            raise ValueError("fast_scan IVF-PQ runs on the CPU only")
        if self.refine not in (None, "none") and self.index != "ivfpq":
            raise ValueError(f"refine re-scores IVF-PQ candidates (index ivfpq); a {self.index} index "
                             f"scores exactly already: leave refine unset or none")
        return self

    @property
    def refined(self) -> bool:
        """Whether this IVF-PQ index re-scores its candidates (an unset refine: not, as before)."""
        return self.index == "ivfpq" and self.refine not in (None, "none")

    def build_params(self) -> dict[str, Any]:
        keep = {"flat": (), "hnsw": ("hnsw_m", "ef_construction", "ef_search", "deterministic"),
                "ivfpq": ("nlist", "pq_m", "pq_nbits", "fast_scan", "nprobe", "train_size", "seed",
                          "refine", "refine_factor")}[self.index]
        return {"index": self.index, **{k: getattr(self, k) for k in keep}}


def with_refine_default(params: FaissParams, default: str | None) -> FaissParams:
    """``params`` with an unset IVF-PQ ``refine`` set to ``default`` (the family's
    ``refine_default``: the dense index's flat, ColBERT's token index none)."""
    if params.index == "ivfpq" and params.refine is None:
        return params.model_copy(update={"refine": default})
    return params


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def use_gpu(params: FaissParams) -> bool:
    if params.device == "cpu" or params.index == "hnsw" or params.fast_scan:
        return False
    ok = gpu_available()
    if params.device == "gpu" and not ok:
        raise IndexParamError("device=gpu asked for, but faiss sees no GPU (is faiss-gpu installed?)")
    return ok


def auto_nlist(n: int) -> int:
    """4*sqrt(N) rounded to a power of two, at most N/39 (faiss's minimum points per centroid)."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    return int(max(1, min(nlist, n // 39 if n >= 39 else 1)))


def resolve_params(params: FaissParams, n: int, dim: int) -> FaissParams:
    """Fill the automatic IVF-PQ values for a corpus of ``n`` vectors of width ``dim`` (an unset
    refine is none: the family sets its own default first, :func:`with_refine_default`)."""
    if params.index != "ivfpq":
        return params
    if params.refine is None:
        params = params.model_copy(update={"refine": "none"})
    nlist = params.nlist or auto_nlist(n)
    pq_m = params.pq_m or max(1, dim // (4 if params.fast_scan else 8))  # 4-bit codes: twice the sub-quantizers
    if dim % pq_m:
        raise IndexParamError(f"pq_m={pq_m} must divide the embedding width {dim}")
    train = params.train_size or max(40 * nlist, 50_000)
    return params.model_copy(update={"nlist": nlist, "pq_m": pq_m, "train_size": min(train, n)})


def sample_rows(blocks: Callable[[], Iterable[np.ndarray]], n: int, size: int, seed: int) -> np.ndarray:
    """A deterministic uniform sample of ``size`` rows from row blocks (memory-mapped shards)."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(size, n), replace=False))
    out, pos = [], 0
    for block in blocks():
        lo, hi = np.searchsorted(take, [pos, pos + len(block)])
        if hi > lo:
            out.append(np.asarray(block[take[lo:hi] - pos], dtype=np.float32))
        pos += len(block)
    return np.ascontiguousarray(np.concatenate(out))


def new_index(params: FaissParams, dim: int):
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if params.index == "flat":
        return faiss.IndexFlatIP(dim)
    if params.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, ip)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if params.fast_scan:
        index = faiss.IndexIVFPQFastScan(quantizer, dim, params.nlist, params.pq_m, params.pq_nbits, ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.pq_m, params.pq_nbits, ip)
    index.cp.seed = params.seed
    index.nprobe = params.nprobe
    return index


def new_refine_store(params: FaissParams, dim: int):
    """The second copy of the vectors a refined IVF-PQ index re-scores from (CPU)."""
    import faiss

    if params.refine == "sq8":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexFlatIP(dim)


def refine_index(base, store, refine_factor: int):
    """``base`` (IVF-PQ) and ``store`` (the same vectors, same order) as one faiss IndexRefine."""
    import faiss

    if store.ntotal != base.ntotal:
        raise IndexParamError(f"the refine store holds {store.ntotal:,} vectors, the IVF-PQ index {base.ntotal:,}")
    index = faiss.IndexRefine(base, store)  # faiss's python wrapper keeps both alive with it
    index.k_factor = float(refine_factor)
    return index


class _Threads:
    """Temporarily set faiss's OpenMP thread count."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            import faiss

            self.old = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.old:
            import faiss

            faiss.omp_set_num_threads(self.old)


def build_faiss(blocks: Callable[[], Iterable[np.ndarray]], n: int, dim: int, params: FaissParams,
                on_progress: Callable[[int], None] | None = None):
    """Build an index from row blocks (``blocks()`` can be called twice: sample, then add).

    Returns ``(cpu_index, resolved_params)``; the index is always a CPU index, ready to write.
    """
    import faiss

    params = resolve_params(params, n, dim)
    index = new_index(params, dim)
    gpu = use_gpu(params)
    work = index
    if gpu:
        try:
            work = faiss.index_cpu_to_all_gpus(index)
        except RuntimeError as e:  # an unsupported configuration: CPU works for all
            console.log(f"faiss GPU cannot hold this index ({e}); building on the CPU")
            gpu, work = False, index
    store = new_refine_store(params, dim) if params.refined else None  # on the CPU
    if params.index == "ivfpq":
        sample = sample_rows(blocks, n, params.train_size, params.seed)
        work.train(sample)
        if store is not None and not store.is_trained:  # sq8: per-dimension ranges
            store.train(sample)
        del sample
    with _Threads(1 if params.index == "hnsw" and params.deterministic else None):
        for block in blocks():
            block = np.ascontiguousarray(block, dtype=np.float32)
            work.add(block)
            if store is not None:
                store.add(block)
            if on_progress:
                on_progress(len(block))
    if gpu:
        index = faiss.index_gpu_to_cpu(work)
    if store is not None:
        index = refine_index(index, store, params.refine_factor)
    return index, params


def refine_override(params: FaissParams, refine_factor: Any) -> FaissParams:
    """``params`` searched with another ``refine_factor``; one error line for a bad value or an
    index that keeps no vectors to re-score from."""
    from pydantic import ValidationError

    if not params.refined:
        raise IndexParamError(f"refine_factor: this {params.index} index re-scores no candidates "
                              f"(refine: {params.refine or 'none'}); build it with --refine flat to use one")
    try:
        return FaissParams.model_validate({**params.model_dump(), "refine_factor": refine_factor})
    except ValidationError as e:
        raise IndexParamError(f"refine_factor: {e.errors()[0]['msg']} (got {refine_factor!r})") from None


def is_refined(index) -> bool:
    """Whether a (CPU) faiss index re-scores its candidates (IndexRefine, IndexRefineFlat)."""
    import faiss

    return isinstance(index, faiss.IndexRefine)


def prepare_search(index, params: FaissParams):
    """Apply search-time parameters and move to a GPU when one is usable (a refined IVF-PQ
    index stays on the CPU: faiss has no GPU IndexRefine)."""
    import faiss

    if params.index == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = params.ef_search
    elif params.index == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = params.nprobe
        if is_refined(index):
            index.k_factor = float(params.refine_factor)
            return index
    if use_gpu(params):
        try:
            index = faiss.index_cpu_to_all_gpus(index)
        except RuntimeError as e:
            console.log(f"faiss GPU cannot hold this index ({e}); searching on the CPU")
    return index


def faiss_share(params: FaissParams) -> float:
    """Rough bytes of a FAISS index of ``params``' type per byte of the vectors it holds (a
    refined IVF-PQ adds its copy: float32, or 8-bit for sq8)."""
    refine = {"flat": 1.0, "sq8": 0.25}.get(params.refine or "none", 0.0) if params.index == "ivfpq" else 0.0
    return {"flat": 1.0, "hnsw": 1.2, "ivfpq": 0.1}.get(params.index, 1.0) + refine


def write_index(index, path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_index(path, mmap: bool = False):
    """Read a FAISS index file; a missing, truncated or foreign file is one error line naming it."""
    import faiss

    from retrieval_kd.index.files import damaged

    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    if not os.path.isfile(path):
        raise damaged(path, "missing")
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as e:  # faiss's message: "Error in <C++ signature> at <file>: <what>"
        what = re.sub(r"^Error in .*? at \S+:\d+: ", "", " ".join(str(e).split()))
        raise damaged(path, f"not a readable FAISS index ({what[:160]})") from None
