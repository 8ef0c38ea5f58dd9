"""Chunked corpus encoding on Ray workers: the chunks of :mod:`retrieval_kd.index.chunks`, each
encoded by a free Ray actor (one per worker, each loading the encoder once), written by this
process alone as the one-process :func:`~retrieval_kd.index.chunks.encode_chunked` writes them.

So the work folder, its chunk boundaries, its resume after a kill and the index built from it are
those of a one-process build; only where the vectors are computed differs. At most two chunks per
worker are in flight: the driver slices the texts of a chunk (from an Arrow-backed corpus: only
those rows) when it sends it, so neither side ever holds every passage. Ray is the optional
extra ``scale`` (:func:`~retrieval_kd.scores.ray_scoring.require_ray`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from retrieval_kd.index.chunks import ChunkStore
from retrieval_kd.progress import console


class _EncodeWorker:
    """One Ray actor: builds the encoder on first use, encodes chunks."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory, self.encoder = factory, None

    def ready(self) -> int:
        if self.encoder is None:
            self.encoder = self.factory()
        return os.getpid()

    def encode(self, i: int, texts: list[str]) -> tuple[int, dict[str, np.ndarray]]:
        self.ready()
        return i, self.encoder.encode_docs(texts)

    def peak_rss_mb(self) -> float:
        from retrieval_kd.index.stats import peak_rss_mb

        return peak_rss_mb()


def encode_chunked_ray(store: ChunkStore, texts: Sequence[str], factory: Callable[[], Any], *,
                       address: str = "local", workers: int | None = None, gpus_per_worker: float = 0,
                       on_progress: Callable[[int], None] | None = None,
                       after_chunk: Callable[[int], None] | None = None,
                       stats: dict[str, Any] | None = None) -> dict[str, int]:
    """Encode every missing chunk of ``texts`` into ``store`` on Ray actors built from ``factory``
    (a picklable function returning an index encoder); returns what :func:`encode_chunked`
    returns. ``address``/``workers``/``gpus_per_worker``: as ``rkd score --ray``. ``stats``, when
    given, receives the workers' count and peak RSS (MiB), and ``startup_s`` (Ray and the workers'
    encoders started)."""
    from retrieval_kd.scores.ray_scoring import LOCAL, check_reachable, require_ray, worker_errors

    if len(texts) != store.n_items:
        raise ValueError(f"store holds {store.n_items} items, got {len(texts)} texts")
    ray = require_ray()
    todo, resumed, redone = [], 0, 0
    for i in range(store.n_chunks):
        damage = store.damage(i) if store.is_done(i) else None
        if damage:
            console.log(f"{store.chunk_dir(i)}: {damage}; encoding it again")
            shutil.rmtree(store.chunk_dir(i))
            redone += 1
        if store.is_done(i):
            resumed += 1
            if on_progress:
                on_progress(store.bounds(i)[1] - store.bounds(i)[0])
        else:
            todo.append(i)
    started, t0 = False, time.perf_counter()
    if todo and not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address == LOCAL:
            kwargs["num_cpus"] = workers or os.cpu_count() or 1
        else:
            check_reachable(address)
            kwargs["address"] = address
        ray.init(**kwargs)
        started = True
    try:
        if todo:
            n = workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
            actor = ray.remote(_EncodeWorker).options(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=3,
                                                      max_task_retries=3)
            actors = [actor.remote(factory) for _ in range(min(n, len(todo)))]
            with worker_errors(ray):  # every worker has its encoder (an encoder that cannot load: its error, now)
                ray.get([a.ready.remote() for a in actors])
            if stats is not None:
                stats["startup_s"] = round(time.perf_counter() - t0, 2)
            _run(ray, actors, store, texts, todo, on_progress, after_chunk, worker_errors)
            if stats is not None:
                with worker_errors(ray):
                    stats["workers"] = len(actors)
                    stats["worker_peak_rss_mb"] = ray.get([a.peak_rss_mb.remote() for a in actors])
            for a in actors:
                ray.kill(a, no_restart=True)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    info = {"chunks": store.n_chunks, "chunks_resumed": resumed, "chunks_encoded": len(todo)}
    return {**info, "chunks_damaged": redone} if redone else info


def _run(ray, actors: list, store: ChunkStore, texts: Sequence[str], todo: list[int],
         on_progress, after_chunk, worker_errors) -> None:
    """Keep two chunks in flight per actor; write each as it returns."""
    pending = list(reversed(todo))
    in_flight: dict[Any, Any] = {}
    free = [a for a in actors for _ in range(2)]

    def send() -> None:
        while free and pending:
            i = pending.pop()
            lo, hi = store.bounds(i)
            a = free.pop()
            in_flight[a.encode.remote(i, list(texts[lo:hi]))] = a

    send()
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        ref = ready[0]
        free.append(in_flight.pop(ref))
        with worker_errors(ray):
            i, arrays = ray.get(ref)
        send()
        store.write_chunk(i, arrays)
        if after_chunk:
            after_chunk(i)
        if on_progress:
            lo, hi = store.bounds(i)
            on_progress(hi - lo)

