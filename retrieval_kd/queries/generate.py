"""Generate one query per sampled passage and write the result as a BEIR dataset folder.

The folder (written whole or not at all)::

    corpus.jsonl          the source corpus, copied (same ids, titles, texts, order: its
                          fingerprint equals the source's), so the folder stands alone
    queries.jsonl         the kept queries, ids ``gq-<docid>`` (metadata: source_doc)
    qrels/<split>.tsv     ``gq-<docid>  <docid>  1``: the passage a query was written for
    generated.jsonl       every generation: raw text, the cleaned query or why it was rejected
    manifest.json         source fingerprints, generator (model sha256), template, sampling,
                          counts kept / rejected by reason, library versions, timings

Resuming: generations go to a work folder (default ``.<out>.work`` beside ``out``) in chunks of
``chunk_size`` passages, each chunk file written atomically. A rerun with the same generation
settings keeps the chunks there and generates only the passages they lack; with other settings
the old work is discarded. Each passage is decoded on its own with its own seed, so the
queries do not depend on where a run was cut. Cleaning happens when the folder is written, from
the raw generations (so a change of min_words/max_words reuses them). The work folder is
removed once the dataset is in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.artifacts import (
    atomic_dir,
    atomic_write_text,
    manifest,
    read_json,
    sha256_file,
    sha256_records,
    write_json,
)
from retrieval_kd.data.types import Corpus, Dataset, Document
from retrieval_kd.errors import RkdError
from retrieval_kd.locks import output_lock
from retrieval_kd.queries.backends import Backend, make_backend
from retrieval_kd.queries.clean import REASONS, CleanRules, Deduper, clean_query
from retrieval_kd.queries.params import RUNTIME_KEYS, QueryGenParams
from retrieval_kd.workdirs import claim, only_names, release

PREFIX = "gq-"
GENERATED = "generated.jsonl"
PLAN = "plan.json"
CHUNKS = "chunks"


# ---------------------------------------------------------------- inputs


def load_source(source: str) -> Dataset:
    """The source dataset (its corpus is what matters: any split that exists is loaded)."""
    from retrieval_kd.data.beir import beir_splits
    from retrieval_kd.data.registry import load_dataset, registry

    reg = registry()
    name = source if source in reg else source.split(":", 1)[0]
    if name in reg:
        splits = list(reg[name].splits)
    else:
        splits = beir_splits(source) if Path(source).is_dir() else []
    split = "test" if "test" in splits or not splits else splits[0]
    try:
        return load_dataset(source, split)
    except OSError as e:
        raise RkdError(f"{source}: cannot read the dataset ({e.strerror or e}: {e.filename or ''})") from None


def sample_passages(corpus: Corpus, params: QueryGenParams) -> list[str]:
    """A seeded random sample of the corpus ids (``count`` of them or a ``share``), in corpus order."""
    ids = corpus.ids()
    n = len(ids)
    size = params.count if params.count is not None else max(1, round(params.share * n))
    if size > n:
        raise RkdError(f"count {size} is more than the corpus's {n} passages")
    pick = np.random.default_rng(params.seed).permutation(n)[:size]
    return [ids[i] for i in sorted(pick.tolist())]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ")
    return head[:space] if space > limit // 2 else head


def render_prompt(template: str, doc: Document, max_chars: int) -> str:
    return template.format(title=doc.title, text=_cut(doc.text, max_chars),
                           passage=_cut(doc.joined("\n"), max_chars))


def passage_seed(seed: int, docid: str) -> int:
    """A passage's own decoding seed (31 bits), from the run's seed and its id."""
    h = hashlib.sha256(f"{seed}\x1f{docid}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# ---------------------------------------------------------------- work folder


def _read_chunks(work: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """docid -> record from the finished chunk files (a file that does not parse is removed)."""
    done: dict[str, dict[str, Any]] = {}
    for f in sorted((work / CHUNKS).glob("*.jsonl")):
        try:
            recs = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line]
            ok = all(isinstance(r, dict) and isinstance(r.get("docid"), str) and isinstance(r.get("raw"), str)
                     for r in recs)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            f.unlink()
            continue
        for r in recs:
            if r["docid"] in wanted:
                done.setdefault(r["docid"], r)
    return done


def _prepare_work(work: Path, plan: dict[str, Any], echo: Callable[[str], None]) -> None:
    p = work / PLAN
    if p.is_file():
        try:
            same = read_json(p) == plan
        except ValueError:
            same = False
        if same:
            return
        echo(f"{work}: generations from other settings; starting over")
        shutil.rmtree(work / CHUNKS, ignore_errors=True)
    (work / CHUNKS).mkdir(parents=True, exist_ok=True)
    write_json(p, plan)


# ---------------------------------------------------------------- the stage


def generate_queries(source: str, out: str | Path, params: QueryGenParams, *, work: str | Path | None = None,
                     name: str | None = None, backend: Backend | None = None, progress: bool = True,
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate, clean and write the dataset folder ``out`` (see the module docstring).
    Returns its manifest. ``backend`` reuses an already loaded generator."""
    out = Path(out)
    work = Path(work) if work is not None else out.parent / f".{out.name}.work"
    t_start = time.perf_counter()
    ds = load_source(source)  # bad data fails here, before anything is written
    corpus = ds.corpus
    docids = sample_passages(corpus, params)
    own = backend is None
    gen = make_backend(params) if own else backend
    try:
        plan = {"source_corpus_sha256": corpus.fingerprint,
                "passages_sha256": sha256_records((d,) for d in docids), "passages": len(docids),
                "generation": params.generation(), "generator": gen.identity()}
        with output_lock(work, f"{work}: another query generation is using this work folder"):
            claim(work, "query generation", legacy=_legacy_work)  # never a folder someone else made
            _prepare_work(work, plan, echo)
            done = _read_chunks(work, set(docids))
            todo = [d for d in docids if d not in done]
            if done:
                echo(f"resuming: {len(done)} of {len(docids)} passages already generated")
            _generate_chunks(gen, corpus, todo, params, work, done, progress)
            man = _write_dataset(out, ds, docids, done, params, gen, name, t_start)
    finally:
        if own:
            gen.close()
    release(work)
    return man


def _legacy_work(path: Path) -> bool:
    """A work folder from before work folders were marked: the plan, its chunks, the old lock."""
    return (path / PLAN).is_file() and only_names(
        path, lambda n: n in (PLAN, CHUNKS, ".lock") or n.startswith(f".{PLAN}.tmp-"))


def _generate_chunks(gen: Backend, corpus: Corpus, todo: list[str], params: QueryGenParams, work: Path,
                     done: dict[str, dict[str, Any]], progress: bool) -> None:
    from retrieval_kd.progress import make_progress

    existing = [int(f.stem) for f in (work / CHUNKS).glob("*.jsonl") if f.stem.isdigit()]
    seq = max(existing, default=-1) + 1
    bar = make_progress("queries") if progress and todo else None
    ctx = bar if bar is not None else contextlib.nullcontext()
    with ctx:
        task = bar.add_task("generating queries", total=len(todo)) if bar else None
        for i in range(0, len(todo), params.chunk_size):
            chunk = todo[i:i + params.chunk_size]
            prompts = [render_prompt(params.template, corpus.docs[d], params.max_passage_chars) for d in chunk]
            seeds = [passage_seed(params.seed, d) for d in chunk]
            t0 = time.perf_counter()
            outs = gen.generate(prompts, seeds)
            secs = (time.perf_counter() - t0) / len(chunk)
            recs = [{"docid": d, "raw": raw, "finish": finish, "seed": s, "seconds": round(secs, 4)}
                    for d, (raw, finish), s in zip(chunk, outs, seeds)]
            atomic_write_text(work / CHUNKS / f"{seq:06d}.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
            seq += 1
            done.update((r["docid"], r) for r in recs)
            if bar:
                bar.advance(task, len(chunk))


def _write_dataset(out: Path, ds: Dataset, docids: list[str], done: dict[str, dict[str, Any]],
                   params: QueryGenParams, gen: Backend, name: str | None, t_start: float) -> dict[str, Any]:
    rules = CleanRules(params.min_words, params.max_words, params.max_chars)
    dedup = Deduper()
    kept: dict[str, str] = {}
    rejected: Counter[str] = Counter()
    rows = []
    for d in docids:
        raw, finish = done[d]["raw"], done[d].get("finish")
        query, why = clean_query(raw, rules, finish)
        if query is not None and dedup.seen(query):
            query, why = None, "duplicate"
        if query is None:
            rejected[why] += 1
        else:
            kept[d] = query
        rows.append({"docid": d, "query_id": PREFIX + d if query else None, "raw": raw, "query": query,
                     "rejected": why, "finish": finish, "seed": done[d].get("seed")})
    if not kept:
        raise RkdError(f"no query survived cleaning ({len(docids)} generated: "
                       + ", ".join(f"{k} {v}" for k, v in rejected.items()) + "); the raw generations are kept "
                       "in the work folder: loosen min_words/max_words/max_chars or change the template")
    gen_s = sum(float(done[d].get("seconds") or 0) for d in docids)
    src_files = {k: sha256_file(v) for k, v in ds.sources.items() if Path(v).is_file()}
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)  # a dataset to share, not mkdtemp's 0700
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
            for did, doc in ds.corpus.docs.items():
                f.write(json.dumps({"_id": did, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for d, q in kept.items():
                f.write(json.dumps({"_id": PREFIX + d, "text": q, "metadata": {"source_doc": d}},
                                   ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        (tmp / "qrels" / f"{params.split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{PREFIX}{d}\t{d}\t1\n" for d in kept), encoding="utf-8")
        (tmp / GENERATED).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                     encoding="utf-8")
        versions_extra = {}
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions_extra["llama_cpp_python"] = metadata.version("llama_cpp_python")
        man = manifest(
            "queries",
            inputs={"dataset": ds.name, "source": source_ref(ds), "corpus_sha256": ds.corpus.fingerprint,
                    "n_docs": len(ds.corpus), "files_sha256": src_files},
            params={**params.model_dump(exclude=set(RUNTIME_KEYS)), "prefix": PREFIX,
                    "decoding": "greedy" if params.temperature == 0 else "sampled, one seed per passage"},
            outputs={"name": name or out.name, "split": params.split, "passages": len(docids),
                     "kept": len(kept), "rejected": {r: rejected.get(r, 0) for r in REASONS},
                     "files_sha256": {f: sha256_file(tmp / f) for f in
                                      ("corpus.jsonl", "queries.jsonl", f"qrels/{params.split}.tsv", GENERATED)}},
            timings={"generate_s": gen_s, "total_s": time.perf_counter() - t_start},
            generator=gen.identity(),
            throughput={"queries_per_s": round(len(docids) / gen_s, 3) if gen_s > 0 else None},
        )
        man["versions"].update(versions_extra)
        write_json(tmp / "manifest.json", man)
    return man


def source_ref(ds: Dataset) -> str:
    """Where the source corpus was read from (its folder)."""
    corpus = ds.sources.get("corpus")
    return str(Path(corpus).parent) if corpus else ds.name
