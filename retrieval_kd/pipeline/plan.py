"""From a pipeline to a plan: stages, their dependencies (a DAG), order and content keys.

A stage's key hashes its kind (and adapter version), its config (runtime-only knobs left
out), the fingerprint of the dataset it reads and its inputs' keys. An upstream key already
covers everything upstream, so a changed stage changes its own key and those of the stages
that depend on it, and no other.

Stage ids: ``section:name``, ``section:name@split``, and for an entry trained with several
seeds one stage per seed, ``#s<seed>`` appended (``student:kd#s42``, ``search:kd@test#s42``);
a cross-fitted student's fold models are ``student:NAME%f<j>`` beside ``student:NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import sha256_file, sha256_json, sha256_records
from retrieval_kd.models.backends import keyed_params
from retrieval_kd.pipeline.load import LoadedPipeline, PipelineError, _dataset_source
from retrieval_kd.pipeline.registry import stage_kind
from retrieval_kd.pipeline.schema import (
    FOLD_MARK,
    REF_SECTIONS,
    STUDENT_REF,
    BM25Retrieve,
    FusionRetrieve,
    IndexEntry,
    Pipeline,
    entry_seeds,
    fold_name,
    student_refs,
)

KEY_LENGTH = 16


@dataclass
class Stage:
    id: str
    """``section:name`` or ``section:name@split``, then ``#s<seed>`` for a seeded entry."""
    kind: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    """Input name -> upstream stage id."""
    dataset: str | None = None
    """The dataset source the stage reads (its fingerprint is part of the key)."""
    loc: tuple = ()
    """Where the stage comes from in the pipeline file."""
    key: str = ""

    @property
    def dirname(self) -> str:
        return f"{self.id.replace(':', '-').replace('#', '-').replace('%', '-')}-{self.key}"


def _sid(section: str, name: str, split: str | None = None, seed: int | None = None) -> str:
    return f"{section}:{name}" + (f"@{split}" if split else "") + (f"#s{seed}" if seed is not None else "")


def entry_of(sid: str) -> str:
    """The entry a stage id belongs to (``search:kd@test#s42`` -> ``search:kd``, a fold model
    ``student:kd%f0`` -> ``student:kd``)."""
    return sid.split("#")[0].split("@")[0].split(FOLD_MARK)[0]


def _student_sid(p: Pipeline, name: str, seed: int | None) -> str:
    """A student's stage: seed ``seed`` of a seeded student (the caller's own seed)."""
    return _sid("student", name, seed=seed if p.students[name].seeds else None)


def _student_refs(p: Pipeline, spec: dict[str, Any], inputs: dict[str, str], seed: int | None) -> None:
    """Collect ``student:NAME`` models of a teacher spec as inputs ``model:NAME``."""
    for name in student_refs(spec):
        inputs[f"model:{name}"] = _student_sid(p, name, seed)


def _crossfit_refs(p: Pipeline, ds: dict[str, str], spec: dict[str, Any], dataset: str, split: str,
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
                inputs[f"model:{fold_name(name, j)}"] = _sid("student", fold_name(name, j))
    return out


def _local_models(obj: Any, base: Path) -> Any:
    """Model references (``model``/``init`` values) that are paths relative to the pipeline
    file, made absolute so stages find them from any working directory."""
    if isinstance(obj, dict):
        return {k: (_abs_model(v, base) if k in ("model", "init") and isinstance(v, str) else
                    _local_models(v, base)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_local_models(v, base) for v in obj]
    return obj


def _abs_model(ref: str, base: Path) -> str:
    from retrieval_kd.models.registry import model_registry

    if ref.startswith(STUDENT_REF) or ref in model_registry() or Path(ref).is_absolute():
        return ref
    cand = base / ref
    return str(cand.resolve()) if cand.exists() else ref


def _score_stages(p: Pipeline, section: str, ds: dict[str, str], base: Path) -> list[Stage]:
    out = []
    for name, t in getattr(p, f"{section}s").items():
        spec = _local_models(t.teacher.model_dump(), base)
        for split in t.splits:
            for seed in entry_seeds(p, f"{section}s", name) or [None]:
                inputs = {"candidates": _sid("retrieve", t.candidates, split)}
                _student_refs(p, spec, inputs, seed)
                crossfit = _crossfit_refs(p, ds, spec, t.dataset, split, inputs)
                cfg = {"dataset": ds[t.dataset], "split": split, "name": name, "top_k": t.top_k,
                       "add_positives": t.add_positives, "chunk_size": t.chunk_size, "teacher": spec}
                if crossfit:  # absent otherwise: a stage without out-of-fold members keeps its key
                    cfg["crossfit"] = crossfit
                out.append(Stage(_sid(section, name, split, seed), "score", cfg, inputs, ds[t.dataset],
                                 (f"{section}s", name)))
    return out


def build_stages(lp: LoadedPipeline) -> list[Stage]:
    """Every stage of the pipeline, in file order (not yet sorted or keyed)."""
    from retrieval_kd.queries.stage import link_generated, queries_stages

    p, ds, base = lp.pipeline, lp.datasets, lp.path.parent
    out: list[Stage] = queries_stages(lp, _abs_model)
    for name, r in p.retrieve.items():
        params = r.model_dump(exclude={"kind", "dataset", "splits", "k", "model", "runs"})
        for split in r.splits:
            cfg = {"dataset": ds[r.dataset], "split": split, "k": r.k, "name": name, "params": params}
            if isinstance(r, FusionRetrieve):
                out.append(Stage(_sid("retrieve", name, split), "retrieve.fusion",
                                 {**cfg, "runs": list(r.runs)},
                                 {f"run:{n}": _sid("retrieve", n, split) for n in r.runs},
                                 ds[r.dataset], ("retrieve", name)))
            elif isinstance(r, BM25Retrieve):
                out.append(Stage(_sid("retrieve", name, split), "retrieve.bm25", cfg,
                                 dataset=ds[r.dataset], loc=("retrieve", name)))
            else:
                out.append(Stage(_sid("retrieve", name, split), "retrieve.dense",
                                 {**cfg, "model": _abs_model(r.model, base)},
                                 dataset=ds[r.dataset], loc=("retrieve", name)))
    out += _score_stages(p, "teacher", ds, base)
    for name, s in p.students.items():
        folds = [None, *range(s.crossfit)] if s.crossfit else [None]  # the full model, then the folds
        for seed, fold in [(sd, f) for sd in s.seeds or [None] for f in folds]:
            inputs = {}
            if s.teacher:
                inputs["teacher"] = _sid("teacher", s.teacher, s.split)
            if s.candidates:
                inputs["candidates"] = _sid("retrieve", s.candidates, s.split)
            if s.init.startswith(STUDENT_REF):
                inputs["init"] = _student_sid(p, s.init[len(STUDENT_REF):], seed)
            params = s.params if seed is None else {**s.params, "seed": seed}
            if fold is not None:
                params = {**params, "query_folds": [fold, s.crossfit]}
            cfg = {"name": name, "family": s.family, "init": _abs_model(s.init, base), "dataset": ds[s.dataset],
                   "split": s.split, "loss": s.loss, "params": params}
            sid = _sid("student", name, seed=seed) if fold is None else _sid("student", fold_name(name, fold))
            out.append(Stage(sid, "train", cfg, inputs, ds[s.dataset], ("students", name)))
    out += _score_stages(p, "reranker", ds, base)
    for name, ix in p.indexes.items():
        for seed in entry_seeds(p, "indexes", name) or [None]:
            inputs = {"student": _sid("student", ix.student, seed=seed)} if ix.student else {}
            cfg = {"name": name, "dataset": ds[ix.dataset], "family": ix.family,
                   "model": _abs_model(ix.model, base) if ix.model else None,
                   "kind": ix.kind, "params": keyed_params(ix.params)}
            out.append(Stage(_sid("index", name, seed=seed), "index", cfg, inputs, ds[ix.dataset],
                             ("indexes", name)))
            for split in ix.search.splits:
                scfg = {"name": name, "dataset": ds[ix.dataset], "split": split, "k": ix.search.k,
                        "params": ix.search.params}
                out.append(Stage(_sid("search", name, split, seed), "search", scfg,
                                 {"index": _sid("index", name, seed=seed)}, ds[ix.dataset],
                                 ("indexes", name, "search")))
    for name, ev in p.evals.items():
        inputs, seeds = {}, {}
        for disp, ref in ev.systems.items():
            ids = ref_stages(p, ref, ev.split)
            if list(ids) == [None]:
                inputs[disp] = ids[None]
            else:
                seeds[disp] = list(ids)
                inputs.update({seed_input(disp, sd): sid for sd, sid in ids.items()})
        cfg = {"name": name, "dataset": ds[ev.dataset], "split": ev.split, "systems": list(ev.systems),
               "refs": dict(ev.systems), "baseline": ev.baseline, "metrics": ev.metrics,
               "ignore_identical_ids": ev.ignore_identical_ids, "stat_test": ev.stat_test,
               "alpha": ev.alpha}
        if seeds:  # absent otherwise: an eval without seeded systems keeps its key
            cfg["seeds"] = seeds
        if ev.families:
            cfg["families"] = {f: fam.model_dump() for f, fam in ev.families.items()}
        out.append(Stage(_sid("eval", name), "eval", cfg, inputs, ds[ev.dataset], ("evals", name)))
    return link_generated(out, lp)


def seed_input(system: str, seed: int) -> str:
    """The eval stage's input name for one seed's run of a seeded system."""
    return f"{system}#s{seed}"


def ref_stages(p: Pipeline, ref: str, split: str) -> dict[int | None, str]:
    """The stage ids an eval system reference stands for on ``split``, by seed (``{None: id}``
    for an unseeded entry)."""
    prefix, _, name = ref.partition(":")
    assert prefix in REF_SECTIONS
    section = REF_SECTIONS[prefix]
    stage = "search" if isinstance(getattr(p, section)[name], IndexEntry) else prefix
    return {seed: _sid(stage, name, split, seed) for seed in entry_seeds(p, section, name) or [None]}


def order_stages(stages: list[Stage], lp: LoadedPipeline | None = None) -> list[Stage]:
    """Topological order (file order among independent stages); a cycle is an error."""
    by_id = {s.id: s for s in stages}
    done: dict[str, Stage] = {}
    visiting: list[str] = []

    def visit(s: Stage) -> None:
        if s.id in done:
            return
        if s.id in visiting:
            cycle = " -> ".join(visiting[visiting.index(s.id):] + [s.id])
            where = lp.line(*s.loc) if lp else None
            raise PipelineError(lp.path if lp else "<pipeline>", [(where, f"dependency cycle: {cycle}")])
        visiting.append(s.id)
        for up in s.inputs.values():
            visit(by_id[up])
        visiting.pop()
        done[s.id] = s

    for s in stages:
        visit(s)
    return list(done.values())


def _strip(obj: Any, keys: frozenset[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_strip(v, keys) for v in obj]
    return obj


_FP_CACHE: dict[tuple, str] = {}


def _dir_fingerprint(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    stat = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stat not in _FP_CACHE:
        _FP_CACHE[stat] = sha256_records((str(p.relative_to(root)), sha256_file(p)) for p in files)
    return _FP_CACHE[stat]


def dataset_fingerprint(source: str) -> dict[str, Any]:
    """What identifies a dataset's content: its files' hashes (a directory's name and place
    do not count), plus the registered name when there is one."""
    src, local = _dataset_source(source, Path.cwd())
    registered = None if Path(src).is_absolute() else src
    return {"name": registered, "files_sha256": _dir_fingerprint(local) if local else None}


def _model_content(obj: Any) -> Any:
    """In a key, a model given as a local path counts by its files' content, not its place."""
    if isinstance(obj, dict):
        return {k: ({"files_sha256": _dir_fingerprint(Path(v)) if Path(v).is_dir() else sha256_file(v)}
                    if k in ("model", "init") and isinstance(v, str) and Path(v).is_absolute()
                    and Path(v).exists() else _model_content(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_model_content(v) for v in obj]
    return obj


def key_payload(stage: Stage, keys: dict[str, str], fingerprint) -> dict[str, Any]:
    kind = stage_kind(stage.kind)
    cfg = _strip({k: v for k, v in stage.config.items() if k != "dataset"}, kind.runtime_keys)
    cfg = _model_content(cfg)
    return {"kind": stage.kind, "version": kind.version, "config": cfg,
            "dataset": fingerprint(stage.dataset) if stage.dataset else None,
            "inputs": {n: keys[u] for n, u in sorted(stage.inputs.items())}}


def plan(lp: LoadedPipeline, fingerprint=dataset_fingerprint) -> list[Stage]:
    """Stages in dependency order, each with its key."""
    stages = order_stages(build_stages(lp), lp)
    keys: dict[str, str] = {}
    for s in stages:
        s.key = sha256_json(key_payload(s, keys, fingerprint))[:KEY_LENGTH]
        keys[s.id] = s.key
    return stages


def select(stages: list[Stage], targets: list[str]) -> list[Stage]:
    """The stages matching any target (an id such as ``teacher:ens@train``, an entry such as
    ``teacher:ens`` (all its splits and seeds), an id without its seed such as
    ``search:kd@test`` (all its seeds), or a section such as ``retrieve:``) and everything they
    depend on, in order."""
    from retrieval_kd.errors import RkdError

    by_id = {s.id: s for s in stages}
    wanted: set[str] = set()

    def add(sid: str) -> None:
        if sid not in wanted:
            wanted.add(sid)
            for up in by_id[sid].inputs.values():
                add(up)

    for t in targets:
        hits = [s.id for s in stages if t in (s.id, s.id.split("#")[0], entry_of(s.id))
                or (t.endswith(":") and s.id.startswith(t))]
        if not hits:
            raise RkdError(f"no stage matches '{t}' (stages: {', '.join(by_id)})")
        for h in hits:
            add(h)
    return [s for s in stages if s.id in wanted]
