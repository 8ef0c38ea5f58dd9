"""The score stage: candidates from a run, a teacher from a spec, rows into the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from retrieval_kd.artifacts import sha256_file
from retrieval_kd.data.registry import load_dataset
from retrieval_kd.data.runfiles import locate_run
from retrieval_kd.data.trec import load_trec_run
from retrieval_kd.progress import make_progress
from retrieval_kd.redact import redact_obj
from retrieval_kd.scores.candidates import build_candidates, select_shard
from retrieval_kd.scores.store import ScoreStore, score_into_store
from retrieval_kd.teachers.base import Teacher
from retrieval_kd.teachers.identity import spec_identity
from retrieval_kd.teachers.spec import build_teacher

DEFAULT_ROOT = Path("scores")


def score_stage(dataset: str, split: str, candidates_run: str | Path, teacher_spec, *,
                root: str | Path = DEFAULT_ROOT, top_k: int = 100, add_positives: bool = False,
                shard: tuple[int, int] | None = None, chunk_size: int = 2000,
                progress: bool = True, teacher_factory: Callable[[], Teacher] | None = None,
                embedding_cache: str | Path | None = None) -> ScoreStore:
    """Score a split's candidates (top-k of a run) with a teacher into the score store.

    ``teacher_factory`` builds the teacher when there is something to score (default: a new
    one from ``teacher_spec``, closed when done); callers scoring several stores with one spec
    may pass one that returns a teacher already loaded: that teacher stays theirs, open.
    ``embedding_cache``: the folder the default factory's teachers keep passage vectors in.
    """
    from retrieval_kd.teachers.prompts import bind_task, bind_teacher, task_of

    own = teacher_factory is None  # a teacher from the caller's factory is the caller's to close
    ds_task = task_of(dataset)  # an LLM teacher's prompt follows the dataset's task unless its spec fixes one
    teacher_spec = bind_task(teacher_spec, ds_task)
    made = teacher_factory or (lambda: build_teacher(teacher_spec, embedding_cache))

    def factory() -> Teacher:
        return bind_teacher(made(), ds_task)
    ds = load_dataset(dataset, split)
    run_file, run_manifest = locate_run(candidates_run)
    cands = build_candidates(ds, load_trec_run(run_file), top_k, add_positives)
    identity = spec_identity(teacher_spec)
    params = {
        "candidates": {"run_file": str(run_file), "run_sha256": sha256_file(run_file),
                       "run_stage": (run_manifest or {}).get("params"), "top_k": top_k,
                       "add_positives": add_positives},
        "teacher_spec": redact_obj(teacher_spec.model_dump()),  # a server URL's user:key@ never stored
    }
    total = len(select_shard(cands, shard))
    if not progress:
        return score_into_store(ds, cands, factory, identity, root, params=params, chunk_size=chunk_size,
                                shard=shard, close_teacher=own)
    with make_progress(rate_unit="pairs") as prog:
        task = prog.add_task(f"scoring {total:,} pairs", total=total)
        first = [True]

        def advance(n: int, _total: int) -> None:
            if first[0]:  # already-stored rows count as done, without skewing the rate
                prog.update(task, completed=n)
                prog.reset(task, total=total, completed=n)
                first[0] = False
            else:
                prog.advance(task, n)

        return score_into_store(ds, cands, factory, identity, root, params=params, chunk_size=chunk_size,
                                shard=shard, on_progress=advance, close_teacher=own)
