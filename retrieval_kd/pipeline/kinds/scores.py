"""The ``teachers`` and ``rerankers`` sections: score stages, a teacher scoring the top-k of a
retrieve entry's run, one stage per split (``teacher:NAME@SPLIT``, ``reranker:NAME@SPLIT``).

A teacher spec's model may be ``student:NAME``: the stage takes that student's stage as an
input (a reranker of seeded students is one stage per seed); a cross-fitted student scoring its
own training split is replaced by its fold models, out-of-fold (docs/pipelines.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from retrieval_kd.artifacts import write_json
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.pipeline.adapters import model_dir_of, rate, run_file_of, stage_result
from retrieval_kd.pipeline.kinds.retrieve import check_run_ref
from retrieval_kd.pipeline.kinds.students import student_sid
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem
from retrieval_kd.pipeline.plan import Stage, local_models, sid
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.schema import STUDENT_REF, Split, _Strict, fold_name
from retrieval_kd.pipeline.sections import Section, entry_seeds
from retrieval_kd.redact import redact_obj
from retrieval_kd.teachers.spec import TeacherSpec

RAY_ADDRESS = r"^(local|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]+)$"


class RayOptions(_Strict):
    """Score on Ray workers, as ``rkd score --ray ADDRESS --ray-workers N --ray-gpus G``
    (:mod:`retrieval_kd.scores.ray_scoring`): the rows equal a one-process run's, so these
    options stay out of the stage's key."""

    address: str = Field("local", pattern=RAY_ADDRESS)
    """``local`` (a Ray started on this machine for the stage), ``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT``."""
    workers: int | None = Field(None, gt=0)
    """Ray workers, each loading the teacher once (default: the machine's or cluster's CPUs)."""
    gpus: float = Field(0.0, ge=0)
    """GPUs each worker takes."""


class ScoreEntry(_Strict):
    """A score stage per split: ``teacher`` scores the top-``top_k`` of ``candidates``."""

    dataset: str
    splits: list[Split] = Field(min_length=1)
    candidates: str
    top_k: int = Field(100, gt=0)
    add_positives: bool = False
    chunk_size: int = Field(2000, gt=0)
    teacher: TeacherSpec
    ray: RayOptions | None = None


def student_refs(spec: dict[str, Any]) -> list[str]:
    """The students (``student:NAME`` models) a teacher spec uses, ensemble members included."""
    if spec.get("kind") == "ensemble":
        return [n for m in spec.get("members", []) for n in student_refs(m["teacher"])]
    model = str(spec.get("model", ""))
    return [model[len(STUDENT_REF):]] if model.startswith(STUDENT_REF) else []


def _teacher_models(spec: dict, loc: tuple) -> list[tuple[str, tuple]]:
    if spec.get("kind") == "ensemble":
        out = []
        for i, m in enumerate(spec.get("members", [])):
            out += _teacher_models(m["teacher"], (*loc, "members", i, "teacher"))
        return out
    if spec.get("kind") == "crossfit":
        return [m for i, f in enumerate(spec.get("folds", [])) for m in _teacher_models(f, (*loc, "folds", i))]
    if spec.get("kind") == "llm" and spec.get("backend") == "openai":
        return []
    return [(spec["model"], (*loc, "model"))] if spec.get("model") else []


def _seeded_models(p: Any, spec: dict, loc: tuple) -> list[tuple[str, tuple]]:
    """(student, location) for each seeded student a teacher spec uses."""
    out = []
    for ref, mloc in _teacher_models(spec, loc):
        name = ref[len(STUDENT_REF):]
        if ref.startswith(STUDENT_REF) and name in p.students and p.students[name].seeds:
            out.append((name, mloc))
    return out


def _crossfit_refs(p: Any, ds: dict[str, str], spec: dict[str, Any], dataset: str, split: str,
                   inputs: dict[str, str]) -> dict[str, int]:
    """The cross-fitted students of a teacher spec that a score stage of ``dataset`` and ``split``
    uses out-of-fold: those trained on that very split (of the same dataset source). Their fold
    models become inputs ``model:NAME%fJ`` in place of the full model's (which scores none of the
    split's queries); returns name -> K."""
    out = {}
    for name in student_refs(spec):
        s = p.students.get(name)
        if s is not None and s.crossfit and s.split == split and ds[s.dataset] == ds[dataset]:
            out[name] = s.crossfit
            inputs.pop(f"model:{name}", None)
            for j in range(s.crossfit):
                inputs[f"model:{fold_name(name, j)}"] = sid("student", fold_name(name, j))
    return out


class Scores(Section):
    """Teachers (``seeded=False``: no seeded student may teach) or rerankers."""

    entry = ScoreEntry

    def __init__(self, name: str, stage: str, seeded: bool) -> None:
        self.name, self.stage, self.ref, self.seeded = name, stage, stage, seeded

    def seeds(self, p: Any, name: str) -> list[int] | None:
        if not self.seeded:
            return None
        seeded = [p.students[n].seeds for n in student_refs(getattr(p, self.name)[name].teacher.model_dump())
                  if n in p.students and p.students[n].seeds]
        return seeded[0] if seeded else None

    def ref_problem(self, name: str, entry: Any) -> str | None:
        if entry.add_positives:
            return (f"{self.ref} '{name}' adds the qrels positives to its candidates (add_positives): "
                    "its scores on an evaluated split would leak the judgements")
        return None

    def check(self, c: Checks) -> list[Problem]:
        p, section = c.p, self.name
        for name, t in getattr(p, section).items():
            loc = (section, name)
            if t.ray is not None and not _has_ray():
                c.bad((*loc, "ray"), "scoring on Ray needs Ray, which is not installed: "
                                     "pip install 'retrieval-kd[scale]' (or drop the ray key)")
            if c.dataset(loc, t.dataset, t.splits):
                check_run_ref(c, (*loc, "candidates"), t.candidates, t.dataset, t.splits)
            for ref, mloc in _teacher_models(t.teacher.model_dump(), (*loc, "teacher")):
                if ref.startswith(STUDENT_REF) and "folds" in mloc:
                    c.bad(mloc, f"a crossfit teacher's folds are trained models; to cross-fit a pipeline student, "
                                f"give it crossfit: K and name '{ref}' as a member (its fold models follow)")
                else:
                    c.model(mloc, ref)
            for ref, mloc in _seeded_models(p, t.teacher.model_dump(), (*loc, "teacher")):
                if not self.seeded:
                    c.bad(mloc, f"student '{ref}' is trained with several seeds (seeds: {p.students[ref].seeds}): "
                                "which seed's model would teach? Name an unseeded student as a teacher "
                                "(a reranker of it may be seeded)")
                elif p.students[ref].seeds != entry_seeds(p, section, name):
                    c.bad(mloc, f"the seeded students of one reranker need the same seeds (student '{ref}': "
                                f"{p.students[ref].seeds}, another: {entry_seeds(p, section, name)})")
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        p, ds, out = lp.pipeline, lp.datasets, []
        for name, t in getattr(p, self.name).items():
            spec = local_models(t.teacher.model_dump(), lp.path.parent)
            for split in t.splits:
                for seed in self.seeds(p, name) or [None]:
                    inputs = {"candidates": sid("retrieve", t.candidates, split)}
                    for student in student_refs(spec):
                        inputs[f"model:{student}"] = student_sid(p, student, seed)
                    crossfit = _crossfit_refs(p, ds, spec, t.dataset, split, inputs)
                    cfg = {"dataset": ds[t.dataset], "split": split, "name": name, "top_k": t.top_k,
                           "add_positives": t.add_positives, "chunk_size": t.chunk_size, "teacher": spec}
                    if crossfit:  # absent otherwise: a stage without out-of-fold members keeps its key
                        cfg["crossfit"] = crossfit
                    if t.ray is not None:  # a runtime key: where the scores are computed, not which
                        cfg["ray"] = t.ray.model_dump()
                    out.append(Stage(sid(self.stage, name, split, seed), "score", cfg, inputs, ds[t.dataset],
                                     (self.name, name)))
        return out


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


TEACHERS = Scores("teachers", "teacher", seeded=False)
RERANKERS = Scores("rerankers", "reranker", seeded=True)


# ---------------------------------------------------------------- the score adapter


def _substitute_students(spec: dict[str, Any], inputs: dict[str, Path],
                         crossfit: dict[str, int] | None = None) -> dict[str, Any]:
    """``student:NAME`` models -> the trained model folders; a student in ``crossfit`` (name -> K)
    becomes a ``crossfit`` spec over its K fold models (inputs ``model:NAME%fJ``)."""
    if spec.get("kind") == "ensemble":
        return {**spec, "members": [{**m, "teacher": _substitute_students(m["teacher"], inputs, crossfit)}
                                    for m in spec["members"]]}
    model = str(spec.get("model", ""))
    if model.startswith(STUDENT_REF):
        name = model[len(STUDENT_REF):]
        k = (crossfit or {}).get(name)
        if k:
            folds = [model_dir_of(inputs[f"model:{fold_name(name, j)}"]) for j in range(k)]
            return {"kind": "crossfit", "folds": [{**spec, "model": str(d)} for d in folds]}
        return {**spec, "model": str(model_dir_of(inputs[f"model:{name}"]))}
    return spec


_LOADED_TEACHER: dict[str, Any] = {}
"""The last teacher a score stage built in this process, by spec: the next score stage with the
same spec (e.g. the train store, then the same teacher reranking test) reuses it, model loads
and text-keyed embedding caches included. Only the last one is kept (LLM teachers are large).
The cache owns it: score stores leave it open (``score_stage`` closes only teachers it built),
and it is closed here when another spec replaces it or :func:`release_teacher` drops it."""


def release_teacher() -> None:
    """Close and forget the kept teacher (the runner calls this before a stage of another kind)."""
    kept = list(_LOADED_TEACHER.values())
    _LOADED_TEACHER.clear()
    for t in kept:
        t.close()


def _teacher_factory(spec):
    from retrieval_kd.embcache import current_root
    from retrieval_kd.teachers.spec import build_teacher

    # the run's embedding cache too: a teacher kept from another run root must not write into it
    key = json.dumps([spec.model_dump(mode="json"), str(current_root())], sort_keys=True)

    def factory():
        if key not in _LOADED_TEACHER:
            release_teacher()
            _LOADED_TEACHER[key] = build_teacher(spec)
        return _LOADED_TEACHER[key]
    return factory


def _ray_factory(spec, opts: dict[str, Any], made: list):
    """A factory of a :class:`~retrieval_kd.scores.ray_scoring.RayTeacher` (the code of
    ``rkd score --ray``): each worker builds the teacher from ``spec``, with the run's embedding
    cache; the teachers it made are appended to ``made`` (the adapter closes them)."""
    from retrieval_kd.embcache import current_root
    from retrieval_kd.scores.ray_scoring import RayTeacher, require_ray
    from retrieval_kd.teachers.spec import build_teacher

    require_ray()
    cache = current_root()

    def factory():
        release_teacher()  # a kept one-process teacher would hold memory the workers need
        made.append(RayTeacher(lambda: build_teacher(spec, cache), opts["address"], opts.get("workers"),
                               gpus_per_worker=opts.get("gpus") or 0.0))
        return made[-1]
    return factory


@register("score", resumable=True, runtime_keys=("batch_size", "threads", "device", "chunk_size",
                                                  "base_url", "concurrency", "timeout", "ray"))
def score(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Score the candidates into a store inside the stage; also write the scores as a run
    (the teacher as a reranker of its candidates)."""
    from retrieval_kd.artifacts import manifest, sha256_file
    from retrieval_kd.data.trec import write_trec_run
    from retrieval_kd.models.backends import label_of_identity
    from retrieval_kd.models.params import teacher_parameters
    from retrieval_kd.scores.stage import score_stage
    from retrieval_kd.teachers.spec import parse_teacher

    spec = parse_teacher(_substitute_students(config["teacher"], inputs, config.get("crossfit")),
                         f"stage {config['name']}")
    out.mkdir(parents=True, exist_ok=True)
    made: list = []
    factory = _ray_factory(spec, config["ray"], made) if config.get("ray") else _teacher_factory(spec)
    try:
        store = score_stage(config["dataset"], config["split"], run_file_of(inputs["candidates"]), spec,
                            root=out / "stores", top_k=config["top_k"], add_positives=config["add_positives"],
                            chunk_size=config["chunk_size"], teacher_factory=factory)
    finally:
        for t in made:  # Ray's workers and the local Ray end with the stage
            t.close()
    run = store.scores()
    write_trec_run(run, out / RUN_FILE, tag=config["name"])
    sm = store.manifest
    sessions = sm.get("sessions", [])
    pairs, secs = sum(x["pairs_scored"] for x in sessions), sum(x["seconds"] for x in sessions)
    pairs_per_s = rate(pairs, secs)
    n_pairs, n_q = int(sm.get("n_rows") or 0), max(len(run), 1)
    first = stage_result(inputs["candidates"]).get("latency_ms_per_query")
    rerank_ms = 1000 * n_pairs / pairs_per_s / n_q if pairs_per_s else None
    write_json(out / "manifest.json", manifest(
        "score.rerank", inputs={"candidates": str(run_file_of(inputs["candidates"])),
                                "store": store.path.name},
        params={"name": config["name"], "top_k": config["top_k"],
                "teacher_spec": redact_obj(spec.model_dump())},
        outputs={RUN_FILE: {"sha256": sha256_file(out / RUN_FILE), "queries": len(run)}},
        store_id=sm.get("store_id"), teacher=sm.get("teacher"),
    ))
    return {"run": RUN_FILE, "store": str(store.path.relative_to(out)), "queries": len(run),
            "pairs": n_pairs, "throughput": {"pairs_per_s": pairs_per_s},
            "backend": label_of_identity(sm.get("teacher")),
            "latency_ms_per_query": round(rerank_ms + (first or 0), 3) if rerank_ms is not None else None,
            "latency_note": "first stage + teacher scoring of the query's candidates",
            "parameters": teacher_parameters(spec.model_dump()),
            "run_note": f"reranks the first stage's top-{config['top_k']}: a metric at a deeper cutoff "
                        f"sees those {config['top_k']} only"}
