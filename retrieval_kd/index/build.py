"""Building an index directory from a dataset's corpus.

``indexes/NAME/`` holds the index files, ``doc_ids.json`` (document number -> id) and
``manifest.json`` (kind ``index.dense|splade|colbert``: the corpus fingerprint, the
encoder's identity and weight hash, every parameter, the cost figures: build time,
size on disk, peak memory; and ``files``, every file's size and sha256, checked when the
index is opened, see :mod:`retrieval_kd.digests`).

Documents are first encoded into a chunked work folder beside the output
(``.NAME.work/``, see :mod:`retrieval_kd.index.chunks`): a killed build run again with the
same inputs resumes from the finished chunks. The index is then assembled from the
chunks (memory-mapped) into a temporary folder renamed into place when complete; the
work folder is removed only afterwards (``keep_embeddings`` links its chunks into the index
as ``embeddings/``), so a build that fails, e.g. on a full disk, keeps every encoded chunk.

With ``embedding_cache`` (a folder, :mod:`retrieval_kd.embcache`) dense and SPLADE documents
already encoded by the same model and settings, in any build, stage or teacher, are taken from
it; the manifest's ``stats.encode.cached_docs`` counts them (``docs_per_s`` counts the others).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import MANIFEST, atomic_dir, manifest, write_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.digests import file_digests
from retrieval_kd.families import ModelFamily, get, index_kinds
from retrieval_kd.index.chunks import ChunkStore, encode_chunked
from retrieval_kd.index.faiss_index import FaissParams, build_faiss, resolve_params, write_index
from retrieval_kd.index.stats import dir_size, peak_rss_mb
from retrieval_kd.locks import output_lock
from retrieval_kd.progress import Timer, console, make_progress
from retrieval_kd.storage import dir_bytes, writing
from retrieval_kd.workdirs import clean_stale_temps, link_copy, release, require_replaceable

DOC_IDS = "doc_ids.json"
KINDS = index_kinds()
"""Every index manifest's ``kind``."""


def work_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.work"


def _encode_corpus(enc, texts: Sequence[str], corpus_sha: str, work: Path, chunk_size: int,
                   title_sep: str, after_chunk: Callable[[int], None] | None,
                   ray: dict[str, Any] | None = None, factory: Callable[[], Any] | None = None
                   ) -> tuple[ChunkStore, dict]:
    spec = {"encoder": enc.identity(), "corpus_sha256": corpus_sha, "title_sep": title_sep}
    store = ChunkStore(work, spec, len(texts), chunk_size)
    if store.discarded:
        console.log(f"{work} held chunks of other inputs: discarded")
    done = len(store.done_chunks())
    if done:
        console.log(f"resuming: {done}/{store.n_chunks} chunks already encoded in {work}")
    with make_progress("docs") as prog:
        task = prog.add_task(f"encoding {len(texts):,} docs ({enc.family})", total=len(texts))
        if ray is not None:  # the same chunks, encoded by Ray's workers (index/ray_encode.py)
            from retrieval_kd.index.ray_encode import encode_chunked_ray

            workers: dict[str, Any] = {}
            info = encode_chunked_ray(store, texts, factory, address=ray.get("address", "local"),
                                      workers=ray.get("workers"), gpus_per_worker=ray.get("gpus") or 0,
                                      on_progress=lambda n: prog.advance(task, n), after_chunk=after_chunk,
                                      stats=workers)
            info["ray"] = {**ray, **workers}
        else:
            info = encode_chunked(store, texts, enc.encode_docs, lambda n: prog.advance(task, n), after_chunk)
    cache = getattr(enc, "cache", None)
    if cache is not None:
        info["cached_docs"] = cache.cached
    return store, info


def _blocks(arrays: Callable[[], Any], rows: int = 65536):
    """Re-chunk an iterable of row arrays into float32 blocks of at most ``rows`` rows."""
    def gen():
        for a in arrays():
            for i in range(0, len(a), rows):
                yield np.asarray(a[i:i + rows], dtype=np.float32)
    return gen


def write_faiss(arrays: Callable[[], Any], n: int, dim: int, fp: FaissParams,
                path: Path) -> tuple[Any, FaissParams]:
    """A FAISS index over the row arrays ``arrays()`` yields (``n`` rows of ``dim``), written to
    ``path``; returns it and its resolved params."""
    index, fp = build_faiss(_blocks(arrays), n, dim, fp)
    write_index(index, path)
    return index, fp


def build_index(family: str, dataset: str, out: str | Path, model: Any, *,
                encoder_params=None, faiss_params: FaissParams | None = None,
                split: str = "test", chunk_size: int = 8192, title_sep: str = " ",
                keep_embeddings: bool = False, name: str | None = None,
                work_dir: str | Path | None = None, keep_work: bool = False,
                after_chunk: Callable[[int], None] | None = None, engine: str = "exact",
                plaid_params: Any = None, embedding_cache: str | Path | None = None,
                ray: dict[str, Any] | None = None) -> Path:
    """Encode the corpus of ``dataset`` with ``model`` and write a ``family`` index to ``out``
    (``family``: an indexable family or its index name, ``dense`` | ``splade`` | ``colbert``).

    ``engine`` (ColBERT only): ``exact`` (MaxSim over every candidate) or ``plaid`` (centroid
    pruning first, :mod:`retrieval_kd.index.plaid`, with ``plaid_params`` as its search defaults);
    the manifest records it and ``rkd search`` follows it.

    ``work_dir`` (default ``.NAME.work`` beside ``out``) holds the encoded chunks; with
    ``keep_work`` it is left in place, so other index variants built with the same encoder and
    ``work_dir`` reuse the encodings instead of encoding the corpus again. ``embedding_cache``
    (dense and SPLADE): a folder of document vectors shared with other builds, stages and teachers.
    ``ray`` (``{address: local|HOST:PORT, workers: N, gpus: G}``): the chunks are encoded on Ray
    workers (:mod:`retrieval_kd.index.ray_encode`); the work folder and index are the same.

    One build per output and per work folder at a time (:mod:`retrieval_kd.locks`); an
    existing ``out`` is replaced only if it is an index, a work folder used only if rkd made it.
    """
    out = Path(out)
    work = Path(work_dir) if work_dir else work_dir_for(out)
    with output_lock(out, f"{out}: another process is building this index"), \
            output_lock(work, f"{work}: another index build is using this work folder"):
        require_replaceable(out, "the index build", ("index",))
        clean_stale_temps(out)  # a killed build's half-written index takes space; nobody else owns it
        return _build_index(get(family), dataset, out, model, encoder_params=encoder_params,
                            faiss_params=faiss_params, split=split, chunk_size=chunk_size,
                            title_sep=title_sep, keep_embeddings=keep_embeddings, name=name, work=work,
                            keep_work=keep_work, after_chunk=after_chunk, engine=engine,
                            plaid_params=plaid_params, embedding_cache=embedding_cache, ray=ray)


def _check_engine(family: ModelFamily, engine: str, fp: FaissParams | None) -> None:
    from retrieval_kd.index.faiss_index import IndexParamError
    from retrieval_kd.index.plaid import ENGINES

    if engine not in ENGINES:
        raise IndexParamError(f"unknown search engine '{engine}' (one of: {', '.join(ENGINES)})")
    if engine != "exact" and not family.engines:
        raise IndexParamError(f"the {engine} engine is for ColBERT indexes, not {family.index_name}")
    if engine == "plaid" and fp is not None and fp.index != "ivfpq":
        raise IndexParamError(f"the plaid engine probes the centroids of an IVF token index: it needs "
                              f"the ivfpq candidate index, not {fp.index}")


def _encode_need(work: Path, n_items: int, chunk_size: int) -> int | None:
    """Bytes the chunks not yet encoded will take, from the size of those already there."""
    done = [p for p in work.glob("chunk-*") if p.is_dir()]
    if not done:
        return None
    left = -(-n_items // chunk_size) - len(done)
    return sum(dir_bytes(p) for p in done) // len(done) * max(left, 1)


def _build_index(family: ModelFamily, dataset: str, out: Path, model: Any, *, encoder_params,
                 faiss_params: FaissParams | None, split: str, chunk_size: int, title_sep: str,
                 keep_embeddings: bool, name: str | None, work: Path, keep_work: bool,
                 after_chunk: Callable[[int], None] | None, engine: str = "exact",
                 plaid_params: Any = None, embedding_cache: str | Path | None = None,
                 ray: dict[str, Any] | None = None) -> Path:
    _check_engine(family, engine, faiss_params)  # before loading or encoding anything
    timer = Timer()
    t_start = time.perf_counter()
    with timer("load_s", f"loading {dataset} and {model}"):
        ds = load_dataset(dataset, split)
        enc = family.index_encoder(model, encoder_params, embedding_cache)
    texts = ds.corpus.texts(title_sep)
    if family.faiss_file:  # fail on impossible parameters before encoding anything
        resolve_params(faiss_params or FaissParams(), max(len(texts), 1), enc.dim)
    with timer("encode_docs_s"), writing(work, need=lambda: _encode_need(work, len(texts), chunk_size)):
        store, enc_info = _encode_corpus(
            enc, texts, ds.corpus.fingerprint, work, chunk_size, title_sep, after_chunk, ray,
            lambda: family.index_encoder(model, encoder_params, embedding_cache))
    n = len(texts)
    params: dict[str, Any] = {"name": name or out.name, "family": family.index_name,
                              "chunk_size": chunk_size, "title_sep": title_sep,
                              "encoder_params": encoder_params.model_dump() if encoder_params else {}}
    stats: dict[str, Any] = {"n_docs": n, "encode": enc_info}
    console.log(f"building the {family.index_name} index")
    t_build = time.perf_counter()
    with writing(out, need=lambda: family.index_bytes(faiss_params, dir_bytes(work))), atomic_dir(out) as tmp:
        (tmp / DOC_IDS).write_text(json.dumps(ds.corpus.ids()))
        family.write_index(tmp, store, n, enc, faiss_params, engine, plaid_params, params, stats)
        if keep_embeddings:  # linked, not moved: a failure from here on still leaves the work folder whole
            link_copy(work, tmp / "embeddings")
        timer.timings["build_s"] = time.perf_counter() - t_build
        files = file_digests(tmp)  # sizes and sha256 (hashing is not counted as build time)
        stats.update(index_bytes=sum(f["size"] for p, f in files.items() if not p.startswith("embeddings/")),
                     bytes_on_disk=dir_size(tmp), peak_rss_mb=peak_rss_mb())
        timer.timings["total_s"] = time.perf_counter() - t_start
        encoded = n - enc_info.get("cached_docs", 0)  # documents from the cache took no encoding
        stats["docs_per_s"] = encoded / max(timer.timings.get("encode_docs_s", 0.0), 1e-9) if encoded else None
        write_json(tmp / MANIFEST, manifest(
            family.index_kind,
            inputs={"dataset": ds.protocol(), "corpus_sha256": ds.corpus.fingerprint,
                    "encoder": enc.identity()},
            params=params, timings=timer.timings, outputs={"files": len(files)}, stats=stats,
            files=files))
    if not keep_work:
        release(work)
    console.log(f"{family.index_name} index: {n:,} docs, {stats['index_bytes'] / 2**20:,.1f} MiB, "
                f"built in {timer.timings['total_s']:.1f}s, peak RSS {stats['peak_rss_mb']:,.0f} MiB")
    return out
