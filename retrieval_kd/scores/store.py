"""The teacher-score store: Parquet chunks plus a manifest, content-addressed and resumable.

Layout of one store (``<root>/<store id>/``)::

    manifest.json            teacher identity, input fingerprints, parameters, status, throughput,
                             and once complete every part's size and sha256 (``files``)
    scores/part-<a>-<b>.parquet   rows of candidates [a, b) of the request, one file per chunk
                             (its Parquet metadata ``rkd.teacher_stats``: the teacher's counts
                             for those rows where it keeps any, e.g. a listwise teacher's repairs)

The store id hashes the teacher identity and the inputs (queries and passages actually
scored, the candidate list), so the same request finds the same store. Each chunk covers
whole queries and is written to a temporary name and renamed, so after a kill -9 a rerun
scores only the missing chunks: no row is lost or written twice. One process writes a store
at a time (its lock, ``<root>/.<store id>.lock``: a second one fails at once or waits, then
finds the store complete); reading a complete store takes no lock. ``pandas.read_parquet``
or any Arrow reader opens ``scores/`` directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from retrieval_kd.artifacts import MANIFEST, manifest, read_json, sha256_json, sha256_records, write_json
from retrieval_kd.data.types import Dataset
from retrieval_kd.digests import check_files, file_digests, recorded_files
from retrieval_kd.errors import IntegrityError, NotFoundError, RkdError
from retrieval_kd.locks import clear_stale, lock_file_for, output_lock
from retrieval_kd.scores.candidates import Candidate, candidates_fingerprint, query_chunks, select_shard
from retrieval_kd.scores.schema import SCHEMA
from retrieval_kd.storage import writing
from retrieval_kd.teachers.base import Pair, Teacher, add_counts

SCORES_DIR = "scores"
PART = re.compile(r"^part-(?:s\d{3}-)?(\d{9})-(\d{9})\.parquet$")
HASH_COLUMNS = ("q_hash", "p_hash")
STATS_KEY = "rkd.teacher_stats"
"""Parquet metadata key of a part's teacher counts (a listwise teacher's permutation repairs)."""
STORE_SCHEMA = SCHEMA.append(pa.field("q_hash", pa.string())).append(pa.field("p_hash", pa.string()))


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def part_name(start: int, end: int) -> str:
    return f"part-{start:09d}-{end:09d}.parquet"


def input_fingerprints(ds: Dataset, cands: list[Candidate]) -> dict[str, Any]:
    """Fingerprints of exactly what is scored: the queries, the passages, the candidate list."""
    qids = list(dict.fromkeys(c.qid for c in cands))
    dids = sorted({c.docid for c in cands})
    return {
        "dataset": ds.name, "split": ds.split,
        "queries_sha256": sha256_records((q, ds.queries.texts[q]) for q in qids),
        "passages_sha256": sha256_records((d, ds.corpus.docs[d].title, ds.corpus.docs[d].text) for d in dids),
        "candidates_sha256": candidates_fingerprint(cands),
        "n_queries": len(qids), "n_passages": len(dids), "n_pairs": len(cands),
    }


def store_id(teacher_identity: dict[str, Any], fingerprints: dict[str, Any]) -> str:
    keys = ("queries_sha256", "passages_sha256", "candidates_sha256")
    return sha256_json({"teacher": teacher_identity, **{k: fingerprints[k] for k in keys}})[:16]


@dataclass
class ScoreStore:
    """A store on disk (complete, partial, or one shard of a request)."""

    path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        p = self.path / MANIFEST
        if not p.is_file():
            raise NotFoundError(f"{self.path}: not a score store (no {MANIFEST})")
        try:
            return read_json(p)
        except ValueError as e:
            raise IntegrityError(f"{p}: not a readable manifest ({e}); the score store is damaged") from None

    @property
    def id(self) -> str:
        return self.manifest["store_id"]

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def require_complete(self, use: str) -> None:
        """Raise a one-line error unless the store is complete (``use``: what needs it)."""
        status = self.manifest.get("status", "incomplete")
        if status != "complete":
            raise RkdError(f"{self.path}: score store is {status}; finish it with `rkd score` "
                           f"(or merge its shards) before {use}")

    def parts(self) -> list[tuple[int, int, Path]]:
        d = self.path / SCORES_DIR
        found = []
        for p in sorted(d.glob("part-*.parquet")) if d.is_dir() else []:
            m = PART.match(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), p))
        return found

    def check_files(self) -> None:
        """Check a complete store's parts against the sizes and sha256 its manifest records (the
        hash once, cached): one error line naming a damaged, missing or unrecorded part."""
        if not (self.path / MANIFEST).is_file():
            return  # a folder of parts only (e.g. copied from another tool): nothing recorded to check
        man = self.manifest
        recorded = recorded_files(man)
        if man.get("status") != "complete" or not recorded:
            return  # still being written, or written before digests were recorded
        hint = "remove it and score again"
        check_files(self.path, recorded, "score store", hint=hint)
        extra = [p for _, _, p in self.parts() if p.relative_to(self.path).as_posix() not in recorded]
        if extra:
            raise IntegrityError(f"{extra[0]}: a part the manifest does not record; the score store is "
                                 f"damaged: {hint}")

    def table(self, with_hashes: bool = False, check: bool = True) -> pa.Table:
        """All rows, in candidate order (``check``: the parts' recorded digests first)."""
        if check:
            self.check_files()
        tables = [_read_part(p) for _, _, p in self.parts()]
        if not tables:
            return STORE_SCHEMA.empty_table() if with_hashes else SCHEMA.empty_table()
        t = pa.concat_tables(tables)
        return t if with_hashes else t.select(SCHEMA.names)

    def scores(self) -> dict[str, dict[str, float]]:
        from retrieval_kd.scores.schema import to_nested

        return to_nested(self.table())


def _read_part(p: Path) -> pa.Table:
    try:
        return pq.read_table(p)
    except (pa.ArrowException, OSError) as e:
        raise IntegrityError(f"{p}: not a readable Parquet part ({' '.join(str(e).split())[:160]}); "
                             "the score store is damaged") from None


def _clean_temp(d: Path) -> None:
    """Remove what a killed writer left: part files cut short in ``d`` (``scores/``) and the store's
    own record files (``.manifest.json.tmp-*``) caught between written and renamed. The caller
    holds the store's lock, so no live writer owns them."""
    for p in [*d.glob(".part-*"), *d.parent.glob(".*.tmp-*")]:
        p.unlink(missing_ok=True)


def _write_part(d: Path, start: int, end: int, table: pa.Table, stats: dict[str, Any] | None = None) -> None:
    """Write one part (``stats``: the teacher's counts for it, kept in the part's metadata)."""
    if stats:
        table = table.replace_schema_metadata({STATS_KEY: json.dumps(stats, sort_keys=True)})
    final = d / part_name(start, end)
    tmp = d / f".{final.name}.tmp"
    try:
        pq.write_table(table, tmp)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a part cut short (a full disk) frees its space at once
        raise


def score_into_store(
    ds: Dataset,
    candidates: list[Candidate],
    teacher_factory: Callable[[], Teacher],
    teacher_identity: dict[str, Any],
    root: str | Path,
    *,
    params: dict[str, Any] | None = None,
    chunk_size: int = 2000,
    shard: tuple[int, int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    close_teacher: bool = True,
) -> ScoreStore:
    """Score ``candidates`` (or shard ``i/n`` of them) into the store of this request.

    Finished chunks are kept; only missing ones are scored. ``teacher_factory`` is called only
    if something is left to score, so a finished store costs no model load. The teacher is
    closed at the end unless ``close_teacher`` is False (a factory handing out one loaded
    teacher to several stores: closing it here would leave the next store a teacher without
    its model).
    """
    fps = input_fingerprints(ds, candidates)
    sid = store_id(teacher_identity, fps)
    path = Path(root) / (sid if shard is None else f"{sid}.shard-{shard[0]}-of-{shard[1]}")
    store = ScoreStore(path)
    if _finished(path, sid):  # a complete store is only read: no lock needed
        clear_stale(lock_file_for(path))  # ... but a writer killed as it finished left its own
        return store
    mine = select_shard(candidates, shard)
    with output_lock(path, f"{path}: another process is scoring into this store"), \
            writing(path, need=lambda: _parts_need(store, len(query_chunks(mine, chunk_size)))):
        return _fill_store(ds, mine, fps, sid, store, teacher_factory, teacher_identity, params=params,
                           chunk_size=chunk_size, shard=shard, on_progress=on_progress,
                           close_teacher=close_teacher)


def _finished(path: Path, sid: str) -> bool:
    try:
        m = read_json(path / MANIFEST)
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("store_id") == sid and m.get("status") == "complete"


def _parts_need(store: ScoreStore, n_chunks: int) -> int | None:
    """Bytes the parts still to score will take, from the size of those already written."""
    sizes = [p.stat().st_size for _, _, p in store.parts()]
    return sum(sizes) // len(sizes) * max(n_chunks - len(sizes), 1) if sizes else None


def _fill_store(ds: Dataset, mine: list[Candidate], fps: dict[str, Any], sid: str, store: ScoreStore,
                teacher_factory: Callable[[], Teacher], teacher_identity: dict[str, Any], *,
                params: dict[str, Any] | None, chunk_size: int, shard: tuple[int, int] | None,
                on_progress: Callable[[int, int], None] | None, close_teacher: bool) -> ScoreStore:
    """Score the chunks ``store`` is missing (its lock held by the caller)."""
    path = store.path
    prior = read_json(path / MANIFEST) if (path / MANIFEST).is_file() else None
    if prior and prior.get("store_id") != sid:
        raise IntegrityError(f"{path}: holds store {prior.get('store_id')}, expected {sid}")
    if prior and prior.get("status") == "complete":
        return store
    chunk_size = prior["params"]["chunk_size"] if prior else chunk_size  # resume with the same chunks
    scores_dir = path / SCORES_DIR
    chunks = query_chunks(mine, chunk_size)
    done = {(a, b) for a, b, _ in store.parts()}
    unknown = done - set(chunks)
    if unknown:
        raise IntegrityError(f"{scores_dir}: parts {sorted(unknown)[:3]} do not match this request's chunks")
    pending = [c for c in chunks if c not in done]
    # the teacher loads before anything is written: a model that cannot load leaves no store
    teacher = _load_teacher(teacher_factory, ds, close_teacher) if pending else None
    created = not path.exists()
    scored = 0
    try:
        scores_dir.mkdir(parents=True, exist_ok=True)
        _clean_temp(scores_dir)
        record = manifest(
            "scores", inputs={**fps, "dataset_protocol": ds.protocol()},
            params={**(params or {}), "chunk_size": chunk_size},
            store_id=sid, teacher=teacher_identity,
            shard={"index": shard[0], "count": shard[1]} if shard else None,
            status="running", n_rows=len(mine),
        )
        if prior:
            record["created"] = prior["created"]
            record["sessions"] = prior.get("sessions", [])
        # what the loaded teacher resolved (an LLM's chat template on or off, its yes/no token ids)
        loaded = teacher.identity() if teacher is not None else (prior or {}).get("teacher_loaded")
        if loaded is not None:
            record["teacher_loaded"] = loaded
        write_json(path / MANIFEST, record)
        finished = sum(b - a for a, b in done)
        if on_progress:
            on_progress(finished, len(mine))
        t0 = time.perf_counter()
        sent: dict[tuple[int, int], list[Pair]] = {}

        def chunks():
            for a, b in pending:
                sent[a, b] = [Pair(c.qid, c.docid, ds.queries.texts[c.qid], ds.corpus.docs[c.docid].joined())
                              for c in mine[a:b]]
                yield (a, b), sent[a, b]

        # chunks may come back in any order (a teacher on several workers, scores/ray_scoring.py);
        # each is written here, by this process alone, once, under its own part name
        for (a, b), scores in teacher.score_chunks(chunks()) if teacher is not None else ():
            part, pairs = mine[a:b], sent.pop((a, b))
            if len(scores) != len(pairs):
                raise RkdError(f"teacher returned {len(scores)} scores for {len(pairs)} pairs")
            _write_part(scores_dir, a, b, pa.table({
                "qid": [c.qid for c in part], "docid": [c.docid for c in part],
                "score": pa.array(scores, pa.float64()),
                "rank": [c.rank for c in part], "label": [c.label for c in part],
                "q_hash": [text_hash(p.query) for p in pairs],
                "p_hash": [text_hash(p.passage) for p in pairs],
            }, schema=STORE_SCHEMA), getattr(teacher, "take_stats", lambda: None)())
            scored += len(pairs)
            if on_progress:
                on_progress(len(pairs), len(mine))
    except BaseException:
        if created and not store.parts():  # nothing scored: leave no empty "running" store behind
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        if teacher is not None and close_teacher:
            teacher.close()
    elapsed = time.perf_counter() - t0
    check_rows(store, len(mine))
    stats = teacher_stats(store)
    if stats:
        record["teacher_stats"] = stats
    record["files"] = file_digests(path)  # every part's size and sha256, checked on loading
    record["status"] = "complete"
    record["sessions"] = record.get("sessions", []) + [
        {"pairs_scored": scored, "seconds": round(elapsed, 3),
         "pairs_per_s": round(scored / elapsed, 2) if scored and elapsed > 0 else None}]
    write_json(path / MANIFEST, record)
    return store


def _load_teacher(factory: Callable[[], Teacher], ds: Dataset, close: bool = True) -> Teacher:
    """Build the teacher and let it see the corpus (closed again if that fails and ``close``)."""
    teacher = factory()
    try:
        teacher.prepare(ds.corpus)
    except BaseException:
        if close:
            teacher.close()
        raise
    return teacher


def teacher_stats(store: ScoreStore) -> dict[str, int]:
    """The teacher's counts summed over the store's parts (empty when it keeps none)."""
    total: dict[str, int] = {}
    for _, _, p in store.parts():
        add_counts(total, json.loads((pq.read_schema(p).metadata or {}).get(STATS_KEY.encode(), b"{}")))
    return total


def check_rows(store: ScoreStore, expected: int) -> None:
    """The store holds exactly ``expected`` rows and no (qid, docid) twice."""
    t = store.table()
    if t.num_rows != expected:
        raise IntegrityError(f"{store.path}: {t.num_rows} rows, expected {expected}")
    keys = set(zip(t.column("qid").to_pylist(), t.column("docid").to_pylist()))
    if len(keys) != t.num_rows:
        raise IntegrityError(f"{store.path}: duplicated (qid, docid) rows")
