"""Cost figures reported by index builds and searches: size on disk, peak memory, latency."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def dir_size(path: str | Path) -> int:
    """Bytes of all files under ``path`` (a file: its own size)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status``, the high-water mark of this program's own
    address space. ``getrusage``'s ``ru_maxrss`` (used elsewhere) survives ``exec``, so a
    command started by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes vs KiB


def latency_stats(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean per-query latency (ms) and QPS (queries over their summed time)."""
    lat = np.asarray(latencies_s, dtype=np.float64)
    if lat.size == 0:
        return {"queries": 0}
    total = float(lat.sum())
    return {"queries": int(lat.size), "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p95_ms": float(np.percentile(lat, 95) * 1e3), "mean_ms": float(lat.mean() * 1e3),
            "qps": float(lat.size / total) if total > 0 else float("inf")}


def timed_each(items: Sequence[Any], fn: Callable[[Any], T],
               on_progress: Callable[[int], None] | None = None) -> tuple[list[T], list[float]]:
    """Call ``fn`` on each item, one at a time, timing each call."""
    out, lat = [], []
    for it in items:
        t0 = time.perf_counter()
        out.append(fn(it))
        lat.append(time.perf_counter() - t0)
        if on_progress:
            on_progress(1)
    return out, lat


def round_floats(d: dict[str, Any], nd: int = 4) -> dict[str, Any]:
    return {k: round(v, nd) if isinstance(v, float) else v for k, v in d.items()}


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Cap the OpenMP / BLAS thread pools (faiss, numpy, torch) at ``n`` inside the block.

    Query-at-a-time search gains little from intra-query threads, and on a busy machine
    OpenMP synchronisation can cost more than the search itself.
    """
    if not n:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it cap faiss only
        import faiss

        old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(old)
        return
    with threadpool_limits(limits=n):
        yield
