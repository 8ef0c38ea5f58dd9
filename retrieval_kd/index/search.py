"""Searching a built index: queries of a dataset split in, a TREC run directory out.

The encoder is re-created from the index manifest (the same model, checked against the
weight hash recorded at build time, and the same settings); the dataset's corpus must be
the one the index was built from. Queries are encoded in one batch, then searched one at
a time so that per-query latency (p50 / p95) and QPS are measured; the run's
``manifest.json`` records them with the peak memory and the index's own figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import MANIFEST, atomic_dir, manifest, read_json, sha256_file, write_json
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.data.trec import write_trec_run
from retrieval_kd.data.types import Run
from retrieval_kd.digests import check_files, file_digests, recorded_files
from retrieval_kd.errors import IntegrityError, NotFoundError
from retrieval_kd.families import get as get_family
from retrieval_kd.index.build import DOC_IDS, KINDS
from retrieval_kd.index.faiss_index import FaissParams, read_index, refine_override
from retrieval_kd.index.files import read_doc_ids
from retrieval_kd.index.stats import latency_stats, limit_threads, peak_rss_mb, round_floats, timed_each
from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.progress import Timer, console, make_progress

SEARCH_OVERRIDES = ("ef_search", "nprobe", "refine_factor", "k_token", "engine", "nfull",
                    "centroid_score_threshold")


def read_index_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    man = folder / MANIFEST
    if not man.is_file():
        raise NotFoundError(f"{folder} is not an index directory (no {MANIFEST})")
    try:
        m = read_json(man)
    except (ValueError, OSError) as e:
        raise IntegrityError(f"{man}: not a readable manifest ({e}); the index is damaged: rebuild it") from None
    if not isinstance(m, dict) or m.get("kind") not in KINDS:
        m = m if isinstance(m, dict) else {}
        raise NotFoundError(f"{folder}: manifest kind '{m.get('kind')}' is not an index")
    return m


def _recorded_model(recorded: dict[str, Any]) -> str | None:
    """What to load: the name the index was built with when it still resolves here (a
    registered short name, an existing path), else the absolute location, else the hub id."""
    from retrieval_kd.models.registry import model_registry

    ref, loc = recorded.get("ref"), recorded.get("location")
    if ref and (ref in model_registry() or Path(ref).exists()):
        return ref
    if loc and Path(loc).exists():
        return loc
    return ref or loc


def encoder_for(man: dict[str, Any], model: Any = None):
    """The index's encoder: ``model`` when given, else the recorded model (hash-checked)."""
    family = get_family(man["params"]["family"])
    params = family.encoder_params(**man["params"].get("encoder_params", {}))
    recorded = man["inputs"]["encoder"].get("model", {})
    if model is None:
        model = _recorded_model(recorded)
        if model is None:
            raise NotFoundError("the index was built from a model object; pass the model to search it")
        ref = resolve_model(model)
        if recorded.get("sha256") and ref.sha256 and ref.sha256 != recorded["sha256"]:
            raise IntegrityError(f"model '{model}' weights (sha256 {ref.sha256[:12]}) differ from the "
                                 f"ones the index was built with ({recorded['sha256'][:12]})")
        model = ref
    return family.index_encoder(model, params)


class Searcher:
    """An opened index: ``search(query_rep, k) -> (doc numbers, scores, extra)``; its family
    (:mod:`retrieval_kd.families`) opens the index files and searches them."""

    def __init__(self, folder: str | Path, overrides: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = read_index_manifest(self.folder)
        self.family = self.manifest["params"]["family"]  # its index name
        self.fam = get_family(self.family)
        # every file's size, and its sha256 once (cached): a damaged index is one error line
        check_files(self.folder, recorded_files(self.manifest), "index", skip=("embeddings/",))
        self.doc_ids: list[str] = read_doc_ids(self.folder / DOC_IDS)
        ov = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = set(ov) - set(SEARCH_OVERRIDES)
        if unknown:
            raise ValueError(f"unknown search parameters {sorted(unknown)}")
        self.search_params: dict[str, Any] = {}
        self.engine = self._engine(ov)
        self.fam.open_index(self, ov)

    def open_faiss(self, ov: dict[str, Any]) -> tuple[Any, FaissParams]:
        """The index's FAISS file read on the CPU, and its params with the overrides (recorded in
        ``search_params``); the family prepares it for search."""
        fp = FaissParams(**self.manifest["params"]["faiss"])  # built before refine: refine unset, none
        fp = fp.model_copy(update={k: ov[k] for k in ("ef_search", "nprobe") if k in ov})
        if "refine_factor" in ov:
            fp = refine_override(fp, ov["refine_factor"])
        self.search_params.update({"ef_search": fp.ef_search} if fp.index == "hnsw" else {})
        self.search_params.update({"nprobe": fp.nprobe} if fp.index == "ivfpq" else {})
        self.search_params.update({"refine_factor": fp.refine_factor} if fp.refined else {})
        return read_index(self.folder / self.fam.faiss_file), fp

    def _engine(self, ov: dict[str, Any]) -> str:
        """ColBERT: the engine the index was built for (``exact`` before engines were recorded),
        unless ``engine`` overrides it; other families have none."""
        from retrieval_kd.index.plaid import ENGINES

        engine = ov.get("engine") or self.manifest["params"].get("engine") or "exact"
        if engine not in ENGINES:
            raise ValueError(f"unknown search engine '{engine}' (one of: {', '.join(ENGINES)})")
        plaid_keys = {"nfull", "centroid_score_threshold"} & set(ov)
        if not self.fam.engines and ("engine" in ov or plaid_keys):
            raise ValueError(f"{sorted({'engine', *plaid_keys} & set(ov))}: ColBERT search "
                             f"parameters, not for a {self.family} index")
        if engine == "exact" and plaid_keys:
            raise ValueError(f"{sorted(plaid_keys)} apply to the plaid engine; this search uses exact")
        return engine

    def search(self, q, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        return self.fam.search(self, q, k)

    def to_run(self, qids: list[str], results) -> Run:
        return {qid: {self.doc_ids[int(d)]: float(s) for d, s in zip(docs, scores)}
                for qid, (docs, scores, _) in zip(qids, results)}


def search_stage(index: str | Path, dataset: str, split: str, out: str | Path, *, k: int = 1000,
                 model: Any = None, overrides: dict[str, Any] | None = None, name: str | None = None,
                 max_queries: int | None = None, threads: int | None = 1) -> Path:
    """Search every query of ``dataset``/``split`` in ``index``; write ``run.trec`` + manifest.

    Queries are searched one at a time on ``threads`` threads (default 1, the usual way to
    measure per-query latency; None leaves the libraries' own thread counts).
    """
    out = Path(out)
    timer = Timer()
    with timer("open_s", f"opening {index}"):
        searcher = Searcher(index, overrides)
    man = searcher.manifest
    with timer("load_s", f"loading {dataset}/{split} and the encoder"):
        ds = load_dataset(dataset, split)
        if ds.corpus.fingerprint != man["inputs"]["corpus_sha256"]:
            raise IntegrityError(f"{dataset}'s corpus (sha256 {ds.corpus.fingerprint[:12]}) is not the one "
                                 f"{index} was built from ({man['inputs']['corpus_sha256'][:12]})")
        enc = encoder_for(man, model)
    qids = ds.queries.ids()[:max_queries]
    texts = [ds.queries.texts[q] for q in qids]
    with timer("encode_queries_s", f"encoding {len(texts):,} queries"):
        reps = enc.encode_queries(texts)
    with timer("search_s"), make_progress("q") as prog, limit_threads(threads):
        task = prog.add_task(f"searching {len(texts):,} queries ({searcher.family})", total=len(texts))
        results, lat = timed_each(reps, lambda r: searcher.search(r, k), lambda n: prog.advance(task, n))
    run = searcher.to_run(qids, results)
    stats: dict[str, Any] = {"latency": round_floats(latency_stats(lat)),
                             "query_encode_ms_mean": 1e3 * timer.timings["encode_queries_s"] / max(len(qids), 1)}
    total = timer.timings["encode_queries_s"] + sum(lat)
    stats["qps_with_encoding"] = len(qids) / total if total > 0 else None
    extras = [r[2] for r in results]
    for key in ("postings", "query_terms", "candidates", "exact_scored", "query_tokens"):
        if extras and key in extras[0]:
            stats[f"avg_{key}"] = float(np.mean([e[key] for e in extras]))
    stats.update(searcher.fam.search_stats(searcher, reps))
    stats["peak_rss_mb"] = peak_rss_mb()
    stats["index"] = {key: man.get("stats", {}).get(key) for key in ("index_bytes", "n_docs", "peak_rss_mb")}
    tag = name or f"{man['params']['name']}"
    params = {"name": tag, "index": str(index), "index_kind": man["kind"], "k": k, "threads": threads,
              "search": searcher.search_params, "faiss": man["params"].get("faiss"),
              "encoder_params": man["params"].get("encoder_params")}
    with atomic_dir(out) as tmp:
        write_trec_run(run, tmp / RUN_FILE, tag=tag)
        write_json(tmp / MANIFEST, manifest(
            f"search.{searcher.family}",
            inputs={"dataset": ds.protocol(), "index": {"path": str(index), "manifest_sha256":
                                                        sha256_file(Path(index) / MANIFEST)},
                    "encoder": enc.identity()},
            params=params, timings=timer.timings,
            outputs={RUN_FILE: {"sha256": sha256_file(tmp / RUN_FILE), "queries": len(run)}},
            stats=stats, files=file_digests(tmp)))
    lt = stats["latency"]
    console.log(f"{len(qids):,} queries: p50 {lt.get('p50_ms', 0):.2f} ms, p95 {lt.get('p95_ms', 0):.2f} ms, "
                f"{lt.get('qps', 0):,.1f} QPS (search), peak RSS {stats['peak_rss_mb']:,.0f} MiB")
    return out
