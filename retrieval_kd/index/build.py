"""Building an index directory from a dataset's corpus.

``indexes/NAME/`` holds the index files, ``doc_ids.json`` (document number -> id) and
``manifest.json`` (kind ``index.dense|splade|colbert``: the corpus fingerprint, the
encoder's identity and weight hash, every parameter, and the cost figures: build time,
size on disk, peak memory).

Documents are first encoded into a chunked work folder beside the output
(``.NAME.work/``, see :mod:`retrieval_kd.index.chunks`): a killed build run again with the
same inputs resumes from the finished chunks. The index is then assembled from the
chunks (memory-mapped) into a temporary folder renamed into place when complete; the
work folder is removed afterwards unless ``keep_embeddings`` moves it into the index as
``embeddings/``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import MANIFEST, atomic_dir, manifest, sha256_file, write_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.index.chunks import ChunkStore, concat_to_npy, encode_chunked
from retrieval_kd.index.encoders import Family, make_encoder
from retrieval_kd.index.faiss_index import FaissParams, build_faiss, resolve_params, write_index
from retrieval_kd.index.stats import dir_size, peak_rss_mb
from retrieval_kd.progress import Timer, console, make_progress

DOC_IDS = "doc_ids.json"
KINDS = {"dense": "index.dense", "splade": "index.splade", "colbert": "index.colbert"}


def work_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.work"


def _encode_corpus(enc, texts: list[str], corpus_sha: str, work: Path, chunk_size: int,
                   title_sep: str, after_chunk: Callable[[int], None] | None) -> tuple[ChunkStore, dict]:
    spec = {"encoder": enc.identity(), "corpus_sha256": corpus_sha, "title_sep": title_sep}
    store = ChunkStore(work, spec, len(texts), chunk_size)
    if store.discarded:
        console.log(f"{work} held chunks of other inputs: discarded")
    done = len(store.done_chunks())
    if done:
        console.log(f"resuming: {done}/{store.n_chunks} chunks already encoded in {work}")
    with make_progress("docs") as prog:
        task = prog.add_task(f"encoding {len(texts):,} docs ({enc.family})", total=len(texts))
        info = encode_chunked(store, texts, enc.encode_docs, lambda n: prog.advance(task, n), after_chunk)
    return store, info


def _files(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _blocks(arrays: Callable[[], Any], rows: int = 65536):
    """Re-chunk an iterable of row arrays into float32 blocks of at most ``rows`` rows."""
    def gen():
        for a in arrays():
            for i in range(0, len(a), rows):
                yield np.asarray(a[i:i + rows], dtype=np.float32)
    return gen


def build_index(family: Family, dataset: str, out: str | Path, model: Any, *,
                encoder_params=None, faiss_params: FaissParams | None = None,
                split: str = "test", chunk_size: int = 8192, title_sep: str = " ",
                keep_embeddings: bool = False, name: str | None = None,
                work_dir: str | Path | None = None, keep_work: bool = False,
                after_chunk: Callable[[int], None] | None = None) -> Path:
    """Encode the corpus of ``dataset`` with ``model`` and write a ``family`` index to ``out``.

    ``work_dir`` (default ``.NAME.work`` beside ``out``) holds the encoded chunks; with
    ``keep_work`` it is left in place, so other index variants built with the same encoder and
    ``work_dir`` reuse the encodings instead of encoding the corpus again.
    """
    out = Path(out)
    timer = Timer()
    t_start = time.perf_counter()
    with timer("load_s", f"loading {dataset} and {model}"):
        ds = load_dataset(dataset, split)
        enc = make_encoder(family, model, encoder_params)
    texts = ds.corpus.texts(title_sep)
    if family in ("dense", "colbert"):  # fail on impossible parameters before encoding anything
        resolve_params(faiss_params or FaissParams(), max(len(texts), 1), enc.dim)
    work = Path(work_dir) if work_dir else work_dir_for(out)
    with timer("encode_docs_s"):
        store, enc_info = _encode_corpus(enc, texts, ds.corpus.fingerprint, work, chunk_size,
                                         title_sep, after_chunk)
    n = len(texts)
    params: dict[str, Any] = {"name": name or out.name, "family": family, "chunk_size": chunk_size,
                              "title_sep": title_sep,
                              "encoder_params": encoder_params.model_dump() if encoder_params else {}}
    stats: dict[str, Any] = {"n_docs": n, "encode": enc_info}
    console.log(f"building the {family} index")
    t_build = time.perf_counter()
    with atomic_dir(out) as tmp:
        (tmp / DOC_IDS).write_text(json.dumps(ds.corpus.ids()))
        if family == "dense":
            fp = faiss_params or FaissParams()
            index, fp = build_faiss(_blocks(lambda: store.iter_arrays("emb")), n, enc.dim, fp)
            write_index(index, tmp / "index.faiss")
            params["faiss"] = fp.model_dump()
            stats.update(dim=enc.dim, ntotal=int(index.ntotal))
        elif family == "splade":
            from retrieval_kd.index.sparse import build_postings

            def chunks():
                for i in range(store.n_chunks):
                    yield store.load(i, "indptr"), store.load(i, "indices"), store.load(i, "data")
            info = build_postings(chunks, n, enc.vocab, tmp)
            df = np.diff(np.load(tmp / "indptr.npy"))
            stats.update(info, avg_doc_terms=info["nnz"] / max(n, 1),
                         max_posting=int(df.max()) if len(df) else 0)
        elif family == "colbert":
            lens = np.concatenate(list(store.iter_arrays("lens", mmap=False))) if n else np.zeros(0, np.int64)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            np.save(tmp / "doc_offsets.npy", offsets)
            total = int(offsets[-1])
            concat_to_npy(store.iter_arrays("tokens"), tmp / "tokens.npy", total, enc.dim, np.float16)
            toks = np.load(tmp / "tokens.npy", mmap_mode="r")
            fp = faiss_params or FaissParams(index="ivfpq", nprobe=16)
            index, fp = build_faiss(_blocks(lambda: [toks]), total, enc.dim, fp)
            write_index(index, tmp / "candidates.faiss")
            del toks
            params["faiss"] = fp.model_dump()
            stats.update(dim=enc.dim, n_tokens=total, avg_doc_tokens=total / max(n, 1))
        else:
            raise ValueError(f"unknown index family '{family}'")
        if keep_embeddings:
            if keep_work:
                shutil.copytree(work, tmp / "embeddings")
            else:
                shutil.move(str(work), str(tmp / "embeddings"))
        timer.timings["build_s"] = time.perf_counter() - t_build
        files = _files(tmp)  # sizes and sha256 (hashing is not counted as build time)
        stats.update(index_bytes=sum(f["bytes"] for p, f in files.items() if not p.startswith("embeddings/")),
                     bytes_on_disk=dir_size(tmp), peak_rss_mb=peak_rss_mb())
        timer.timings["total_s"] = time.perf_counter() - t_start
        stats["docs_per_s"] = n / max(timer.timings.get("encode_docs_s", 0.0), 1e-9)
        write_json(tmp / MANIFEST, manifest(
            KINDS[family],
            inputs={"dataset": ds.protocol(), "corpus_sha256": ds.corpus.fingerprint,
                    "encoder": enc.identity()},
            params=params, timings=timer.timings, outputs=files, stats=stats))
    if work.exists() and not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    console.log(f"{family} index: {n:,} docs, {stats['index_bytes'] / 2**20:,.1f} MiB, "
                f"built in {timer.timings['total_s']:.1f}s, peak RSS {stats['peak_rss_mb']:,.0f} MiB")
    return out
