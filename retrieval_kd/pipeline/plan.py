"""From a pipeline to a plan: stages, their dependencies (a DAG), order and content keys.

A stage's key hashes its kind (and adapter version), its config (runtime-only knobs left
out), the fingerprint of the dataset it reads and its inputs' keys. An upstream key already
covers everything upstream, so a changed stage changes its own key and those of the stages
that depend on it, and no other.

Stage ids: ``section:name``, ``section:name@split``, and for an entry trained with several
seeds one stage per seed, ``#s<seed>`` appended (``student:kd#s42``, ``search:kd@test#s42``);
a cross-fitted student's fold models are ``student:NAME%f<j>`` beside ``student:NAME``.

Each section of the pipeline file expands its own entries (retrieval_kd/pipeline/sections.py);
this module orders and keys the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import sha256_file, sha256_json, sha256_records
from retrieval_kd.pipeline.load import LoadedPipeline, PipelineError, _dataset_source
from retrieval_kd.pipeline.registry import stage_kind
from retrieval_kd.pipeline.schema import FOLD_MARK, STUDENT_REF
from retrieval_kd.pipeline.sections import sections

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


def sid(section: str, name: str, split: str | None = None, seed: int | None = None) -> str:
    """A stage id: ``section:name``, ``@split`` and ``#s<seed>`` when given."""
    return f"{section}:{name}" + (f"@{split}" if split else "") + (f"#s{seed}" if seed is not None else "")


def entry_of(stage_id: str) -> str:
    """The entry a stage id belongs to (``search:kd@test#s42`` -> ``search:kd``, a fold model
    ``student:kd%f0`` -> ``student:kd``)."""
    return stage_id.split("#")[0].split("@")[0].split(FOLD_MARK)[0]


def local_models(obj: Any, base: Path) -> Any:
    """Model references (``model``/``init`` values) that are paths relative to the pipeline
    file, made absolute so stages find them from any working directory."""
    if isinstance(obj, dict):
        return {k: (abs_model(v, base) if k in ("model", "init", "doc_model") and isinstance(v, str) else
                    local_models(v, base)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [local_models(v, base) for v in obj]
    return obj


def abs_model(ref: str, base: Path) -> str:
    """A model reference as stages get it: a path relative to the pipeline file made absolute."""
    from retrieval_kd.models.registry import model_registry
    from retrieval_kd.models.static import PREFIX as STATIC

    if ref.startswith(STATIC):  # static:<ref>, its inner reference resolved the same way
        return STATIC + abs_model(ref[len(STATIC):], base)
    if ref.startswith(STUDENT_REF) or ref in model_registry() or Path(ref).is_absolute():
        return ref
    cand = base / ref
    return str(cand.resolve()) if cand.exists() else ref


def build_stages(lp: LoadedPipeline) -> list[Stage]:
    """Every stage of the pipeline, section by section in file order (not yet sorted or keyed)."""
    secs = sections()
    out = [s for sec in secs for s in sec.stages(lp)]
    for sec in secs:
        out = sec.link(out, lp)
    return out


def seed_input(system: str, seed: int) -> str:
    """The eval stage's input name for one seed's run of a seeded system."""
    return f"{system}#s{seed}"


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
    out = {"kind": stage.kind, "version": kind.version, "config": cfg,
           "dataset": fingerprint(stage.dataset) if stage.dataset else None,
           "inputs": {n: keys[u] for n, u in sorted(stage.inputs.items())}}
    if stage.config.get("translate"):  # the datasets whose queries a student trains on count by content too
        out["translate"] = [fingerprint(src) for src in stage.config["translate"]]
    return out


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
