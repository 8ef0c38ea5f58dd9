"""Run a plan: cached, resumable stages under a run root, and the run record.

Layout of a run root (default ``runs/<pipeline name>``)::

    run.json                      the run record, rewritten after every stage
    pipeline.yaml                 the pipeline file this record ran
    embeddings/                   document vectors shared by the stages (retrieval_kd/embcache.py)
    stages/<id>-<key>/            finished stages (stage.json + the adapter's outputs)
    stages/.work-<id>-<key>/      a stage in progress (kept across a kill only when resumable)

A stage is finished when its keyed directory exists: the adapter fills a work directory,
the runner writes ``stage.json`` into it and renames it into place, so a kill -9 at any
point leaves either a finished stage or none. Older keys stay on disk, so switching a
parameter back finds its outputs again.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import (
    atomic_write_bytes,
    exclusive_lock,
    fsync_dir,
    now_iso,
    read_json,
    sha256_file,
    write_json,
)
from retrieval_kd.errors import RkdError
from retrieval_kd.pipeline import memory
from retrieval_kd.pipeline.load import LoadedPipeline
from retrieval_kd.pipeline.plan import Stage, plan, select
from retrieval_kd.pipeline.registry import stage_kind
from retrieval_kd.redact import redact, redact_obj

STAGES_DIR = "stages"
STAGE_FILE = "stage.json"
RUN_RECORD = "run.json"
EMBEDDINGS_DIR = "embeddings"
PIPELINE_COPY = "pipeline.yaml"
WORK_PREFIX = ".work-"


def default_root(lp: LoadedPipeline) -> Path:
    return Path(lp.pipeline.root) if lp.pipeline.root else Path("runs") / lp.pipeline.name


def stage_dir(root: Path, stage: Stage) -> Path:
    return root / STAGES_DIR / stage.dirname


def is_finished(root: Path, stage: Stage) -> bool:
    return (stage_dir(root, stage) / STAGE_FILE).is_file()


def previous_keys(root: Path) -> dict[str, str]:
    """Stage id -> key in the last run record (to tell 'changed' from 'new' in a plan)."""
    rec = root / RUN_RECORD
    if not rec.is_file():
        return {}
    try:
        return {s["id"]: s["key"] for s in read_json(rec).get("stages", [])}
    except (ValueError, KeyError, TypeError):
        return {}


def describe_plan(stages: list[Stage], root: Path) -> list[dict[str, Any]]:
    """Each stage with what a run would do: 'cached', or 'run' and why."""
    before = previous_keys(root)
    rows = []
    for s in stages:
        if is_finished(root, s):
            status, why = "cached", ""
        else:
            status = "run"
            if (root / STAGES_DIR / f"{WORK_PREFIX}{s.dirname}").is_dir() and stage_kind(s.kind).resumable:
                why = "resume"
            elif s.id in before and before[s.id] != s.key:
                why = f"changed (was {before[s.id]})"
            else:
                why = "new"
        rows.append({"id": s.id, "kind": s.kind, "key": s.key, "status": status, "why": why,
                     "inputs": dict(s.inputs)})
    return rows


def run_lock(root: Path):
    """One runner per run root at a time."""
    return exclusive_lock(root, f"{root}: another 'rkd run' is using this run root")


def _clean_leftovers(stages_dir: Path, keep: set[str]) -> None:
    """Remove temp directories a killed stage left (not the work dirs of resumable stages)."""
    if not stages_dir.is_dir():
        return
    for p in stages_dir.iterdir():
        if p.name.startswith(".") and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _stage_entry(s: Stage, root: Path) -> dict[str, Any]:
    return {"id": s.id, "kind": s.kind, "key": s.key, "dir": f"{STAGES_DIR}/{s.dirname}",
            "inputs": dict(s.inputs), "status": "pending"}


def _from_stage_file(entry: dict[str, Any], d: Path) -> None:
    rec = read_json(d / STAGE_FILE)
    entry.update(wall_s=rec.get("wall_s"), cpu_s=rec.get("cpu_s"), finished=rec.get("finished"),
                 result=rec.get("result", {}))


def run_stages(lp: LoadedPipeline, root: Path | None = None, *, only: list[str] | None = None,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or find cached) every stage of the pipeline; returns the run record."""
    root = (Path(root) if root else default_root(lp)).resolve()
    stages = plan(lp)
    chosen = {s.id for s in (select(stages, only) if only else stages)}
    missing = sorted({f"{s.kind} (needs {m})" for s in stages
                      if s.id in chosen and (m := stage_kind(s.kind).missing()) and not is_finished(root, s)})
    if missing:
        raise RkdError("these stage kinds are not available in this installation: " + ", ".join(missing))
    with run_lock(root):
        sdir = root / STAGES_DIR
        sdir.mkdir(parents=True, exist_ok=True)
        resumable_work = {f"{WORK_PREFIX}{s.dirname}" for s in stages if stage_kind(s.kind).resumable}
        _clean_leftovers(sdir, resumable_work)
        for p in root.glob(".*.tmp-*"):  # a record write cut short by a kill
            p.unlink(missing_ok=True)
        # the copy, like every record here, without credentials (a base_url's user:key@)
        atomic_write_bytes(root / PIPELINE_COPY, redact(lp.path.read_text(encoding="utf-8")).encode("utf-8"))
        record: dict[str, Any] = {
            "pipeline": {"name": lp.pipeline.name, "file": str(lp.path.resolve()),
                         "sha256": sha256_file(lp.path), "copy": PIPELINE_COPY},
            "root": str(root.resolve()), "started": now_iso(), "status": "running",
            "only": only or None, "stages": [_stage_entry(s, root) for s in stages],
        }
        entries = {e["id"]: e for e in record["stages"]}
        by_id = {s.id: s for s in stages}
        t_run = time.perf_counter()

        def save() -> None:
            done = [e for e in record["stages"] if e["status"] in ("ran", "cached")]
            record["updated"] = now_iso()
            record["totals"] = {
                "stages": len(stages),
                "ran": sum(e["status"] == "ran" for e in done),
                "cached": sum(e["status"] == "cached" for e in done),
                "wall_s": round(time.perf_counter() - t_run, 3),
                **memory.usage(),
            }
            write_json(root / RUN_RECORD, record)

        save()
        n = len(stages)
        for i, s in enumerate(stages, 1):
            entry, final = entries[s.id], stage_dir(root, s)
            if s.id not in chosen and not (final / STAGE_FILE).is_file():
                entry["status"] = "not selected"
                continue
            if (final / STAGE_FILE).is_file():
                entry["status"] = "cached"
                _from_stage_file(entry, final)
                echo(f"[{i}/{n}] {s.id}  cached ({s.key})")
                save()
                continue
            echo(f"[{i}/{n}] {s.id}  running ({s.kind}, key {s.key})")
            entry["status"] = "running"
            entry["started"] = now_iso()
            save()
            try:
                wall, cpu, result = _run_one(s, root, by_id)
            except BaseException as e:
                entry["status"] = "failed"
                entry["error"] = redact(f"{type(e).__name__}: {e}")
                if not isinstance(e, (RkdError, KeyboardInterrupt)):
                    entry["traceback"] = redact(traceback.format_exc(limit=20))
                record["status"] = "failed"
                save()
                raise
            memory.release()
            entry.update(status="ran", wall_s=round(wall, 3), cpu_s=round(cpu, 3), finished=now_iso(),
                         result=result, memory=memory.usage())
            echo(f"[{i}/{n}] {s.id}  done in {wall:.1f}s")
            save()
        record["status"] = "complete" if len(chosen) == len(stages) else "partial"
        record["finished"] = now_iso()
        save()
        return record


def _run_one(s: Stage, root: Path, by_id: dict[str, Stage]) -> tuple[float, float, dict[str, Any]]:
    kind = stage_kind(s.kind)
    final = stage_dir(root, s)
    work = root / STAGES_DIR / f"{WORK_PREFIX}{s.dirname}"
    if work.exists() and not kind.resumable:
        shutil.rmtree(work)
    inputs = {name: stage_dir(root, by_id[up]) for name, up in s.inputs.items()}
    if s.kind != "score":  # a teacher kept for the next score stage is not kept past the score stages
        from retrieval_kd.pipeline.kinds.scores import release_teacher

        release_teacher()
    t0, c0 = time.perf_counter(), time.process_time()
    from retrieval_kd.queries.stage import resolve_dataset

    config = resolve_dataset(s.config, inputs)  # a generated dataset: its folder
    from retrieval_kd import embcache

    try:  # a corpus is encoded once per model and settings, whichever stages need it
        with embcache.use_root(root / EMBEDDINGS_DIR):
            result = kind.fn(config, inputs, work) or {}
    finally:
        embcache.flush_all()  # a kept teacher's vectors too
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / STAGE_FILE, {
        "id": s.id, "kind": s.kind, "key": s.key, "config": redact_obj(config),
        "inputs": {name: {"id": up, "dir": inputs[name].name} for name, up in s.inputs.items()},
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "finished": now_iso(), "result": result,
    })
    if final.exists():  # a directory without stage.json is not a finished stage
        shutil.rmtree(final)
    os.replace(work, final)
    fsync_dir(final.parent)
    return wall, cpu, result

