"""Load and check a pipeline file: schema errors and broken references, each with its line."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from yaml.nodes import Node

from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.families import get as get_family
from retrieval_kd.pipeline.schema import (
    REF_SECTIONS,
    STUDENT_REF,
    BM25Retrieve,
    DenseRetrieve,
    EvalEntry,
    FusionRetrieve,
    IndexEntry,
    Pipeline,
    ScoreEntry,
    StudentEntry,
    entry_seeds,
)
from retrieval_kd.yamlloc import load_yaml, locate


class PipelineError(DataError):
    """One or more problems in a pipeline file, each ``file:line: where: what``."""

    def __init__(self, path: str | Path, problems: list[tuple[int | None, str]]) -> None:
        self.problems = sorted(problems, key=lambda p: (p[0] or 0))
        first_line, first = self.problems[0]
        super().__init__(path, first, first_line)
        self.args = ("\n".join(f"{path}:{ln}: {msg}" if ln else f"{path}: {msg}"
                               for ln, msg in self.problems),)

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class LoadedPipeline:
    pipeline: Pipeline
    path: Path
    node: Node | None
    datasets: dict[str, str]
    """Dataset alias -> what ``load_dataset`` is given (a registered name or an absolute path;
    for a generated dataset, its queries stage's id until the runner resolves it)."""
    derived: dict[str, str] = field(default_factory=dict)
    """Dataset alias -> the ``queries`` entry generating it."""

    def line(self, *loc: Any) -> int | None:
        return locate(self.node, loc)


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _fields_at(loc: tuple) -> list[str] | None:
    """The keys allowed where ``loc`` points (for 'unknown key' messages), when knowable."""
    ann: Any = Pipeline
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


def _pydantic_problems(e: ValidationError, node: Node | None) -> list[tuple[int | None, str]]:
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        line = locate(node, loc)
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(loc[:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            out.append((line, f"{_dotted(loc)}: unknown key '{loc[-1]}'{hint}"))
        elif err["type"] == "missing":
            out.append((line, f"{_dotted(loc)}: required key '{loc[-1]}' is missing"))
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            where = _dotted(tuple(p for p in loc if p != "[key]"))
            out.append((line, f"{where}: {err['msg'].removeprefix('Value error, ')}{shown}"))
    return out


def load_pipeline(path: str | Path, *, check_sources: bool = True) -> LoadedPipeline:
    """Parse, validate and cross-check a pipeline file; every problem names its line."""
    path = Path(path)
    data, node = load_yaml(path)
    if not isinstance(data, dict):
        raise PipelineError(path, [(1, "a pipeline file must be a mapping (name, datasets, ...)")])
    try:
        pipe = Pipeline.model_validate(data)
    except ValidationError as e:
        raise PipelineError(path, _pydantic_problems(e, node)) from None
    loaded = LoadedPipeline(pipe, path, node, {})
    problems = _check_references(loaded, check_sources)
    if problems:
        raise PipelineError(path, problems)
    return loaded


# ---------------------------------------------------------------- cross-references


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


def _check_references(lp: LoadedPipeline, check_sources: bool) -> list[tuple[int | None, str]]:
    p, base = lp.pipeline, lp.path.parent
    problems: list[tuple[int | None, str]] = []

    def bad(loc: tuple, msg: str) -> None:
        problems.append((lp.line(*loc), f"{_dotted(loc)}: {msg}"))

    for alias, entry in p.datasets.items():
        if entry.queries is not None:  # generated: retrieval_kd/queries/stage.py
            from retrieval_kd.queries.stage import derived_source, filter_problem

            lp.datasets[alias], lp.derived[alias] = derived_source(entry.queries, entry.filter and alias), entry.queries
            if entry.queries not in p.queries:
                bad(("datasets", alias, "queries"), f"no queries entry '{entry.queries}' "
                                                    f"(queries: {', '.join(p.queries) or 'none'})")
            elif entry.filter is not None and (why := filter_problem(p, entry)):
                bad(("datasets", alias, "filter", "teacher"), why)
            continue
        src, local = _dataset_source(entry.source, base)
        lp.datasets[alias] = src
        if check_sources and local is None and src == entry.source:
            from retrieval_kd.data.registry import registry
            from retrieval_kd.settings import offline

            prefix = src.split(":", 1)[0]
            if src not in registry() and prefix not in registry():
                bad(("datasets", alias, "source"),
                    f"dataset '{entry.source}' is neither registered ({', '.join(registry())}) "
                    f"nor a directory (looked in {base} and the working directory)")
            elif offline():
                bad(("datasets", alias, "source"),
                    f"dataset '{entry.source}' has no local copy and downloads are off (offline)")

    def check_dataset(loc: tuple, alias: str, splits: list[str]) -> bool:
        if alias not in p.datasets:
            bad((*loc, "dataset"), f"no dataset '{alias}' (datasets: {', '.join(p.datasets)})")
            return False
        have = splits_of(lp, alias) or dataset_splits(lp.datasets[alias])
        for s in splits:
            if have is not None and s not in have:
                bad((*loc, "dataset"), f"dataset '{alias}' has no split '{s}' (splits: {', '.join(have)})")
        return True

    def check_model(loc: tuple, ref: str) -> None:
        if check_sources or ref.startswith(STUDENT_REF):
            why = model_problem(ref, p.students, base)
            if why:
                bad(loc, why)

    def check_run_ref(loc: tuple, name: str, dataset: str, splits: list[str]) -> None:
        r = p.retrieve.get(name)
        if r is None:
            bad(loc, f"no retrieve entry '{name}' (retrieve: {', '.join(p.retrieve) or 'none'})")
            return
        if r.dataset != dataset and r.dataset in p.datasets and dataset in p.datasets:
            bad(loc, f"retrieve entry '{name}' is on dataset '{r.dataset}', not '{dataset}'")
        for s in splits:
            if s not in r.splits:
                bad(loc, f"retrieve entry '{name}' has no split '{s}' (splits: {', '.join(r.splits)})")

    from retrieval_kd.queries.stage import generator_problem, splits_of

    for name, q in p.queries.items():
        check_dataset(("queries", name), q.dataset, [])
        if q.base_url is None and q.model is not None:
            check_model(("queries", name, "model"), q.model)
            if why := generator_problem(q.model):
                bad(("queries", name, "model"), why)

    for name, r in p.retrieve.items():
        check_dataset(("retrieve", name), r.dataset, r.splits)
        if isinstance(r, DenseRetrieve):
            check_model(("retrieve", name, "model"), r.model)
        elif isinstance(r, FusionRetrieve):
            for i, ref in enumerate(r.runs):
                if ref == name or ref in r.runs[:i]:
                    bad(("retrieve", name, "runs", i), f"'{ref}' " + ("is this fusion itself" if ref == name
                                                                         else "is listed twice"))
                else:
                    check_run_ref(("retrieve", name, "runs", i), ref, r.dataset, r.splits)
            if r.weights is not None and len(r.weights) != len(r.runs):
                bad(("retrieve", name, "weights"), f"{len(r.weights)} weights for {len(r.runs)} runs")
        assert isinstance(r, (BM25Retrieve, DenseRetrieve, FusionRetrieve))

    for section in ("teachers", "rerankers"):
        entries: dict[str, ScoreEntry] = getattr(p, section)
        for name, t in entries.items():
            loc = (section, name)
            if check_dataset(loc, t.dataset, t.splits):
                check_run_ref((*loc, "candidates"), t.candidates, t.dataset, t.splits)
            for ref, mloc in _teacher_models(t.teacher.model_dump(), (*loc, "teacher")):
                if ref.startswith(STUDENT_REF) and "folds" in mloc:
                    bad(mloc, f"a crossfit teacher's folds are trained models; to cross-fit a pipeline student, "
                              f"give it crossfit: K and name '{ref}' as a member (its fold models follow)")
                else:
                    check_model(mloc, ref)
            for ref, mloc in _seeded_models(p, t.teacher.model_dump(), (*loc, "teacher")):
                if section == "teachers":
                    bad(mloc, f"student '{ref}' is trained with several seeds (seeds: {p.students[ref].seeds}): "
                              "which seed's model would teach? Name an unseeded student as a teacher "
                              "(a reranker of it may be seeded)")
                elif p.students[ref].seeds != entry_seeds(p, section, name):
                    bad(mloc, f"the seeded students of one reranker need the same seeds (student '{ref}': "
                              f"{p.students[ref].seeds}, another: {entry_seeds(p, section, name)})")

    for name, s in p.students.items():
        loc = ("students", name)
        s_: StudentEntry = s
        if check_dataset(loc, s_.dataset, [s_.split]):
            if s_.teacher is not None:
                t = p.teachers.get(s_.teacher)
                if t is None:
                    bad((*loc, "teacher"), f"no teacher '{s_.teacher}' (teachers: {', '.join(p.teachers) or 'none'})")
                elif s_.split not in t.splits or t.dataset != s_.dataset:
                    bad((*loc, "teacher"), f"teacher '{s_.teacher}' does not score {s_.dataset}/{s_.split} "
                                           f"(it scores {t.dataset}: {', '.join(t.splits)})")
            if s_.candidates is not None:
                check_run_ref((*loc, "candidates"), s_.candidates, s_.dataset, [s_.split])
        check_model((*loc, "init"), s_.init)
        up = s_.init[len(STUDENT_REF):] if s_.init.startswith(STUDENT_REF) else None
        if up == name:
            bad((*loc, "init"), "a student cannot start from itself")
        elif up in p.students and p.students[up].seeds and p.students[up].seeds != s_.seeds:
            bad((*loc, "init"), f"'{s_.init}' is trained with seeds {p.students[up].seeds}: a student starting "
                                "from it needs the same seeds (seed s starts from seed s)")
        if s_.seeds is not None and "seed" in s_.params:
            bad((*loc, "seeds"), "give either 'seeds' or params.seed, not both")
        if s_.crossfit is not None and s_.seeds is not None:
            bad((*loc, "crossfit"), "give either 'crossfit' or 'seeds', not both (a cross-fitted student "
                                    "is one full model and its fold models, of one seed)")
        if s_.teacher is None and s_.candidates is None and s_.params.get("embed_on") != "corpus":
            bad(loc, "a label-only student (no teacher) needs 'candidates' (a retrieve entry for negatives); "
                     "only params.embed_on: corpus trains without them")
        else:
            problems.extend(_train_config_problems(lp, name, s_))

    for name, ix in p.indexes.items():
        loc = ("indexes", name)
        i_: IndexEntry = ix
        check_dataset(loc, i_.dataset, i_.search.splits)
        if i_.student is not None and i_.student not in p.students:
            bad((*loc, "student"), f"no student '{i_.student}' (students: {', '.join(p.students) or 'none'})")
        elif reranker := next((f for f in (i_.family, i_.student and p.students[i_.student].family)
                               if f and not get_family(f).indexable), None):
            bad(loc, f"a {reranker} is not indexable: evaluate it as a reranker "
                     f"(rerankers: {{NAME: {{..., teacher: {{kind: {reranker}, model: 'student:NAME'}}}}}})")
        if i_.model is not None:
            check_model((*loc, "model"), i_.model)
        problems.extend(_index_problems(lp, name, i_))

    for name, ev in p.evals.items():
        loc = ("evals", name)
        check_dataset(loc, ev.dataset, [ev.split])
        for disp, ref in ev.systems.items():
            why = _eval_ref_problem(p, ref, ev.dataset, ev.split)
            if why:
                bad((*loc, "systems", disp), why)
        if ev.baseline is not None and ev.baseline not in ev.systems:
            bad((*loc, "baseline"), f"baseline '{ev.baseline}' is not one of the systems "
                                    f"({', '.join(ev.systems)})")
        problems.extend(_eval_seed_problems(lp, name, ev))
    return problems


def _seeded_models(p: Pipeline, spec: dict, loc: tuple) -> list[tuple[str, tuple]]:
    """(student, location) for each seeded student a teacher spec uses."""
    out = []
    for ref, mloc in _teacher_models(spec, loc):
        name = ref[len(STUDENT_REF):]
        if ref.startswith(STUDENT_REF) and name in p.students and p.students[name].seeds:
            out.append((name, mloc))
    return out


def _eval_seed_problems(lp: LoadedPipeline, name: str, ev: EvalEntry) -> list[tuple[int | None, str]]:
    """Families naming systems of the eval; seeded systems tested the one way seeds allow."""
    p, loc, out = lp.pipeline, ("evals", name), []
    for fam, f in ev.families.items():
        for role, disp in f.roles().items():
            if disp not in ev.systems:
                where = (*loc, "families", fam, role)
                out.append((lp.line(*where), f"{_dotted(where)}: '{disp}' is not one of the systems "
                                             f"({', '.join(ev.systems)})"))
    seeded = [d for d, ref in ev.systems.items() if _eval_ref_problem(p, ref, ev.dataset, ev.split) is None
              and entry_seeds(p, REF_SECTIONS[ref.partition(":")[0]], ref.partition(":")[2])]
    if seeded and ev.stat_test != "student":
        out.append((lp.line(*loc, "stat_test"), f"evals.{name}.stat_test: '{ev.stat_test}' is ranx's; with seeded "
                    f"systems ({', '.join(seeded)}) the test is a paired t-test over queries on "
                    "seed-averaged scores (stat_test: student)"))
    return out


def _train_config_problems(lp: LoadedPipeline, name: str, s: StudentEntry) -> list[tuple[int | None, str]]:
    """A student's params checked against the train stage's own config (when installed)."""
    try:
        from retrieval_kd.train.config import TrainConfig
    except ImportError:
        return []
    from retrieval_kd.pipeline.adapters import PIPELINE_TRAIN_KEYS, train_config_data

    loc = ("students", name)
    out = []
    for k in s.params:
        if k == "query_folds":
            out.append((lp.line(*loc, "params", k), (f"students.{name}.params.{k}: set by the pipeline "
                        "(crossfit: K trains the fold models)")))
        elif k in PIPELINE_TRAIN_KEYS:
            out.append((lp.line(*loc, "params", k), (f"students.{name}.params.{k}: set by the pipeline "
                        "(family, init, dataset, split, teacher, candidates, loss are the entry's own keys)")))
        elif k not in TrainConfig.model_fields:
            allowed = sorted(set(TrainConfig.model_fields) - PIPELINE_TRAIN_KEYS)
            out.append((lp.line(*loc, "params", k), (f"students.{name}.params.{k}: unknown train setting "
                        f"(allowed: {', '.join(allowed)})")))
    if out:
        return out
    cfg = {"name": name, "family": s.family, "init": s.init, "dataset": lp.datasets.get(s.dataset, s.dataset),
           "split": s.split, "teacher": s.teacher, "loss": s.loss, "params": s.params,
           **({"candidates": s.candidates} if s.candidates else {})}
    try:
        TrainConfig(**train_config_data(cfg, None, Path("/nonexistent")))
    except RkdError as e:  # the loss string's own parser (parse_losses)
        where = (*loc, "loss") if s.loss is not None else loc
        out.append((lp.line(*where), f"{_dotted(where)}: {e}"))
    except ValidationError as e:
        for err in e.errors():
            eloc = tuple(err["loc"])
            if eloc and eloc[0] in s.params:
                where = (*loc, "params", *eloc)
            elif eloc and eloc[0] == "losses":
                where = (*loc, "loss")
            else:
                where = loc
            msg = err["msg"].removeprefix("Value error, ")
            out.append((lp.line(*where), f"{_dotted(where)}: {msg}"))
    return out


def _index_problems(lp: LoadedPipeline, name: str, ix: IndexEntry) -> list[tuple[int | None, str]]:
    """An index entry's params and search params checked against the index module (when installed)."""
    try:
        from retrieval_kd.index.search import SEARCH_OVERRIDES
    except ImportError:
        return []
    from pydantic import ValidationError as PydanticError

    from retrieval_kd.errors import RkdError
    from retrieval_kd.pipeline.adapters import _index_params

    loc = ("indexes", name)
    student = lp.pipeline.students.get(ix.student) if ix.student else None
    family = student.family if student else ix.family
    out = []
    if family is not None and get_family(family).indexable:
        try:
            _index_params(family, ix.kind, ix.params)
        except (RkdError, PydanticError) as e:
            where = (*loc, "params") if ix.params else loc
            out.append((lp.line(*where), f"{_dotted(where)}: {e}".replace("\n", " ")))
    for k in ix.search.params:
        if k not in SEARCH_OVERRIDES:
            msg = f"indexes.{name}.search.params.{k}: unknown search setting (allowed: {', '.join(SEARCH_OVERRIDES)})"
            out.append((lp.line(*loc, "search", "params", k), msg))
    return out


def _eval_ref_problem(p: Pipeline, ref: str, dataset: str, split: str) -> str | None:
    prefix, _, name = ref.partition(":")
    if prefix not in REF_SECTIONS or not name:
        return (f"'{ref}' is not a system reference (write "
                + ", ".join(f"{k}:NAME" for k in REF_SECTIONS) + ")")
    section = REF_SECTIONS[prefix]
    entries = getattr(p, section)
    if name not in entries:
        return f"no {prefix} entry '{name}' ({section}: {', '.join(entries) or 'none'})"
    e = entries[name]
    splits = e.search.splits if isinstance(e, IndexEntry) else e.splits
    if isinstance(e, ScoreEntry) and e.add_positives:
        return (f"{prefix} '{name}' adds the qrels positives to its candidates (add_positives): "
                "its scores on an evaluated split would leak the judgements")
    if e.dataset != dataset and e.dataset in p.datasets and dataset in p.datasets:
        return f"{prefix} '{name}' is on dataset '{e.dataset}', not '{dataset}'"
    if split not in splits:
        return f"{prefix} '{name}' has no run on split '{split}' (splits: {', '.join(splits)})"
    return None
