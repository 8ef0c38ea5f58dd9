"""Load and check a pipeline file: schema errors and broken references, each with its line."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from yaml.nodes import Node

from retrieval_kd.errors import DataError
from retrieval_kd.pipeline.schema import STUDENT_REF, PipelineHead, pipeline_model
from retrieval_kd.pipeline.sections import section, sections
from retrieval_kd.yamlloc import load_yaml, locate

Problem = tuple[int | None, str]
"""A problem in a pipeline file: its line (None: unknown) and ``where: what``."""


class PipelineError(DataError):
    """One or more problems in a pipeline file, each ``file:line: where: what``."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p[0] or 0))
        first_line, first = self.problems[0]
        super().__init__(path, first, first_line)
        self.args = ("\n".join(f"{path}:{ln}: {msg}" if ln else f"{path}: {msg}"
                               for ln, msg in self.problems),)

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class LoadedPipeline:
    pipeline: PipelineHead
    """An instance of :func:`pipeline_model` (one attribute per section)."""
    path: Path
    node: Node | None
    datasets: dict[str, str]
    """Dataset alias -> what ``load_dataset`` is given (a registered name or an absolute path;
    for a generated dataset, its queries stage's id until the runner resolves it)."""
    derived: dict[str, str] = field(default_factory=dict)
    """Dataset alias -> the ``queries`` entry generating it."""

    def line(self, *loc: Any) -> int | None:
        return locate(self.node, loc)


def dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _fields_at(loc: tuple) -> list[str] | None:
    """The keys allowed where ``loc`` points (for 'unknown key' messages), when knowable."""
    ann: Any = pipeline_model()
    for part in loc:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
            origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if part not in ann.model_fields:
                return None
            ann = ann.model_fields[part].annotation
        elif origin is dict:
            ann = typing.get_args(ann)[1]
        elif origin is list:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
            tagged = [m for m in members if "kind" in m.model_fields
                      and part in (typing.get_args(m.model_fields["kind"].annotation) or ())]
            if tagged:
                ann = tagged[0]
            elif len(members) == 1:
                ann = members[0]
                if part in ann.model_fields:
                    ann = ann.model_fields[part].annotation
            else:
                return None
        else:
            return None
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return None


def _pydantic_problems(e: ValidationError, node: Node | None) -> list[Problem]:
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        line = locate(node, loc)
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(loc[:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            out.append((line, f"{dotted(loc)}: unknown key '{loc[-1]}'{hint}"))
        elif err["type"] == "missing":
            out.append((line, f"{dotted(loc)}: required key '{loc[-1]}' is missing"))
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            where = dotted(tuple(p for p in loc if p != "[key]"))
            out.append((line, f"{where}: {err['msg'].removeprefix('Value error, ')}{shown}"))
    return out


def load_pipeline(path: str | Path, *, check_sources: bool = True) -> LoadedPipeline:
    """Parse, validate and cross-check a pipeline file; every problem names its line."""
    path = Path(path)
    data, node = load_yaml(path)
    if not isinstance(data, dict):
        raise PipelineError(path, [(1, "a pipeline file must be a mapping (name, datasets, ...)")])
    try:
        pipe = pipeline_model().model_validate(data)
    except ValidationError as e:
        raise PipelineError(path, _pydantic_problems(e, node)) from None
    loaded = LoadedPipeline(pipe, path, node, {})
    problems = check_references(loaded, check_sources)
    if problems:
        raise PipelineError(path, problems)
    return loaded


# ---------------------------------------------------------------- cross-references


@dataclass
class Checks:
    """What a section's ``check`` gets: the pipeline, and checks that record problems."""

    lp: LoadedPipeline
    check_sources: bool
    """Also check dataset sources and models that are not pipeline entries."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def p(self) -> Any:
        return self.lp.pipeline

    @property
    def base(self) -> Path:
        return self.lp.path.parent

    def bad(self, loc: tuple, msg: str) -> None:
        self.problems.append((self.lp.line(*loc), f"{dotted(loc)}: {msg}"))

    def dataset(self, loc: tuple, alias: str, splits: list[str], key: str | None = "dataset") -> bool:
        """Is ``alias`` a datasets entry (with these splits, where they can be known)? Problems
        point at ``loc``'s ``key`` (``None``: at ``loc`` itself, e.g. a list item)."""
        p, where = self.p, (*loc, key) if key else loc
        if alias not in p.datasets:
            self.bad(where, f"no dataset '{alias}' (datasets: {', '.join(p.datasets)})")
            return False
        have = section("datasets").splits(self.lp, alias)
        for s in splits:
            if have is not None and s not in have:
                self.bad(where, f"dataset '{alias}' has no split '{s}' (splits: {', '.join(have)})")
        return True

    def model(self, loc: tuple, ref: str) -> None:
        """A model reference: a registered name, a path, a Hugging Face id or ``student:NAME``."""
        if self.check_sources or ref.startswith(STUDENT_REF):
            why = model_problem(ref, self.p.students, self.base)
            if why:
                self.bad(loc, why)


def check_references(lp: LoadedPipeline, check_sources: bool) -> list[Problem]:
    """Every section's checks, in section order (``datasets`` first: it resolves the aliases)."""
    return [pr for sec in sections() for pr in sec.check(Checks(lp, check_sources))]


def _dataset_source(source: str, base: Path) -> tuple[str, Path | None]:
    """(what load_dataset gets, local directory if any) for a dataset source."""
    from retrieval_kd.data.registry import registry

    reg = registry()
    prefix = source.split(":", 1)[0]
    if source in reg or prefix in reg:
        spec = reg.get(source) or reg[prefix]
        local = spec.local_dir()
        return source, local if local.is_dir() else None
    for cand in (base / source, Path(source).expanduser()):
        if cand.is_dir():
            return str(cand.resolve()), cand.resolve()
    return source, None


def dataset_splits(source: str) -> list[str] | None:
    """Splits a dataset source offers, when that can be known without loading it."""
    from retrieval_kd.data.beir import beir_splits
    from retrieval_kd.data.registry import registry

    reg = registry()
    name = source if source in reg else source.split(":", 1)[0]  # "xquad-r:de-en": its registered base
    if name in reg:
        return list(reg[name].splits) or None
    p = Path(source)
    if p.is_dir() and (p / "corpus.jsonl").is_file():
        return beir_splits(p)
    return None


def model_problem(ref: str, students: dict, base: Path) -> str | None:
    """Why a model reference cannot be resolved (None when it can)."""
    from retrieval_kd.models.registry import model_registry
    from retrieval_kd.settings import offline

    if ref.startswith(STUDENT_REF):
        name = ref[len(STUDENT_REF):]
        return None if name in students else f"no student '{name}' (students: {', '.join(students) or 'none'})"
    from retrieval_kd.models.static import PREFIX as STATIC

    if ref.startswith(STATIC):  # derived from the model it names
        return model_problem(ref[len(STATIC):], {}, base)
    reg = model_registry()
    if ref in reg or (base / ref).exists() or Path(ref).expanduser().exists():
        return None
    known = ", ".join(reg)
    if "/" in ref.strip("/") and not ref.startswith((".", "/", "~")):
        if not offline():
            return None
        if _in_hf_cache(ref):
            return None
        return (f"model '{ref}' is not a registered name ({known}), not a local path, and not in "
                "the Hugging Face cache (offline)")
    return f"model '{ref}' is not a registered name ({known}) nor an existing path"


def _in_hf_cache(ref: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(ref, f), str)
                   for f in ("config.json", "model.safetensors", "pytorch_model.bin"))
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False


