"""The retrieve stages: each writes a run directory holding ``run.trec`` and ``manifest.json``."""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.artifacts import MANIFEST, atomic_dir, manifest, sha256_file, write_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.data.trec import write_trec_run
from retrieval_kd.data.types import Run
from retrieval_kd.digests import file_digests
from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.progress import Timer, make_progress
from retrieval_kd.retrieve.bm25 import BM25Params, bm25_search
from retrieval_kd.retrieve.dense import (
    DenseParams,
    check_no_doc_model,
    dense_doc_cache,
    encode_texts,
    load_encoder,
)
from retrieval_kd.retrieve.fusion import (
    FusionParams,
    check_arity,
    check_same_split,
    fuse_runs,
    load_input,
    warm_up,
)
from retrieval_kd.retrieve.topk import topk_run


def _write(out: Path, run: Run, dataset: dict | None, kind: str, name: str, params: dict, timer: Timer,
           extra_inputs: dict | None = None, stats: dict | None = None) -> Path:
    with atomic_dir(out) as tmp:
        write_trec_run(run, tmp / RUN_FILE, tag=name)
        write_json(tmp / MANIFEST, manifest(
            kind, inputs={"dataset": dataset, **(extra_inputs or {})},
            params={"name": name, **params}, timings=timer.timings,
            outputs={RUN_FILE: {"sha256": sha256_file(tmp / RUN_FILE), "queries": len(run)}},
            files=file_digests(tmp), **({"stats": stats} if stats else {}),
        ))
    return out


def bm25_stage(dataset: str, split: str, out: Path, params: BM25Params, k: int = 1000,
               name: str = "bm25") -> Path:
    """Retrieve the top-``k`` BM25 documents for every query of the split."""
    timer = Timer()
    with timer("load_s", f"loading {dataset}/{split}"):
        ds = load_dataset(dataset, split)
    with timer("search_s", f"BM25 ({params.backend}) over {len(ds.corpus):,} docs, "
                           f"{len(ds.queries):,} queries"):
        run = bm25_search(ds.corpus, ds.queries, params, k=k)
    return _write(out, run, ds.protocol(), "retrieve.bm25", name, {**params.model_dump(), "k": k}, timer)


def dense_stage(dataset: str, split: str, out: Path, model: str, params: DenseParams,
                k: int = 1000, name: str | None = None, embedding_cache: str | Path | None = None) -> Path:
    """Exact dense retrieval (FAISS flat, inner product) with a sentence-transformers model;
    documents in ``embedding_cache`` (:mod:`retrieval_kd.embcache`) are not encoded again."""
    check_no_doc_model(params)
    timer = Timer()
    with timer("load_s", f"loading {dataset}/{split} and {model}"):
        ds = load_dataset(dataset, split)
        ref = resolve_model(model)
        st = load_encoder(ref, params)
        cache = dense_doc_cache(embedding_cache, ref, st, params)
    texts = ds.corpus.texts(params.title_sep)
    with timer("encode_docs_s"), make_progress() as prog:
        task = prog.add_task(f"encoding {len(texts):,} docs", total=len(texts))

        def enc(t: list[str]):
            return encode_texts(st, t, params, params.doc_prompt, lambda n: prog.advance(task, n))
        d = enc(texts) if cache is None else cache.encode(texts, enc, params.doc_prompt)
        if cache is not None:
            cache.flush()
            prog.update(task, completed=len(texts))
    cached = cache.cached if cache is not None else 0
    with timer("encode_queries_s", f"encoding {len(ds.queries):,} queries"):
        q = encode_texts(st, list(ds.queries.texts.values()), params, params.query_prompt)
    with timer("search_s", "FAISS flat search"):
        run = topk_run(ds.corpus.ids(), d, ds.queries.ids(), q, k)
    if len(texts) > cached:  # documents from the cache took no encoding
        timer.timings["docs_per_s"] = (len(texts) - cached) / max(timer.timings["encode_docs_s"], 1e-9)
    return _write(out, run, ds.protocol(), "retrieve.dense", name or model,
                  {**params.model_dump(), "k": k, "index": "faiss.IndexFlatIP"}, timer,
                  {"model": ref.provenance()}, {"cached_docs": cached} if cache is not None else None)


def fusion_stage(runs: list[str | Path], out: Path, params: FusionParams, k: int = 100,
                 name: str = "fusion") -> Path:
    """Fuse runs of one dataset split (run directories or run files) with ranx; every input
    is read and checked before anything is written."""
    check_arity(len(runs), params)
    timer = Timer()
    with timer("load_s", f"reading {len(runs)} runs"):
        inputs = [load_input(r) for r in runs]
        dataset = check_same_split(inputs)
    with timer("jit_s", "loading ranx's numba kernels"):
        warm_up([i.run for i in inputs], params)
    with timer("fuse_s", f"fusing ({params.method}, norm {params.norm})"):
        run = fuse_runs([i.run for i in inputs], params, k)
    return _write(out, run, dataset, "retrieve.fusion", name,
                  {**params.model_dump(), "ranx_params": params.ranx_params(), "k": k}, timer,
                  {"runs": [i.identity() for i in inputs]})
