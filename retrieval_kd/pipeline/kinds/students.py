"""The ``students`` section: train stages (``student:NAME``), one per seed with ``seeds``
(``student:NAME#s42``), plus K fold models with ``crossfit: K`` (``student:NAME%fJ``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, StrictInt, ValidationError, field_validator

from retrieval_kd.artifacts import read_manifest
from retrieval_kd.errors import RkdError
from retrieval_kd.families import Family
from retrieval_kd.pipeline.adapters import model_dir_of, run_file_of, stage_result
from retrieval_kd.pipeline.kinds.retrieve import check_run_ref
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem, dotted
from retrieval_kd.pipeline.plan import Stage, abs_model, local_models, sid
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.schema import STUDENT_REF, Split, _Strict, fold_name
from retrieval_kd.pipeline.sections import Section


class StudentEntry(_Strict):
    """A train stage. ``params`` passes through to the train config unchanged."""

    family: Family
    init: str
    dataset: str
    split: Split = "train"
    teacher: str | None = None
    """A teachers entry (its scores on ``split``); none trains from labels only."""
    candidates: str | None = None
    """A retrieve entry whose run on ``split`` supplies negatives."""
    loss: str | list[str] | None = None
    params: dict[str, Any] = {}
    seeds: list[StrictInt] | None = Field(None, min_length=1)
    """Train once per seed (each its own stage, ``seed`` set in its train config)."""
    translate: list[str] | None = Field(None, min_length=1)
    """Translate-Distill: datasets entries whose queries (same ids, same split) the student trains
    on instead of ``dataset``'s, which keeps the candidates, teacher scores and passages."""
    crossfit: StrictInt | None = Field(None, ge=2)
    """K: also train K fold models (``student:NAME%fJ``, each without fold J's queries); a
    teacher member ``student:NAME`` scoring this student's own split scores each query with the
    fold model that did not see it (out-of-fold), any other split with the full model."""

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        twice = sorted({s for s in seeds or [] if seeds.count(s) > 1})
        if twice:
            raise ValueError(f"seeds must be unique ({', '.join(map(str, twice))} listed twice)")
        return seeds


def student_sid(p: Any, name: str, seed: int | None) -> str:
    """A student's stage: seed ``seed`` of a seeded student (the caller's own seed)."""
    return sid("student", name, seed=seed if p.students[name].seeds else None)


class Students(Section):
    name, entry, stage = "students", StudentEntry, "student"

    def seeds(self, p: Any, name: str) -> list[int] | None:
        return p.students[name].seeds

    def check(self, c: Checks) -> list[Problem]:
        p, bad = c.p, c.bad
        for name, s in p.students.items():
            loc = ("students", name)
            s_: StudentEntry = s
            if c.dataset(loc, s_.dataset, [s_.split]):
                if s_.teacher is not None:
                    t = p.teachers.get(s_.teacher)
                    if t is None:
                        bad((*loc, "teacher"), f"no teacher '{s_.teacher}' "
                                               f"(teachers: {', '.join(p.teachers) or 'none'})")
                    elif s_.split not in t.splits or t.dataset != s_.dataset:
                        bad((*loc, "teacher"), f"teacher '{s_.teacher}' does not score {s_.dataset}/{s_.split} "
                                               f"(it scores {t.dataset}: {', '.join(t.splits)})")
                if s_.candidates is not None:
                    check_run_ref(c, (*loc, "candidates"), s_.candidates, s_.dataset, [s_.split])
                for i, t_name in enumerate(s_.translate or []):
                    c.dataset((*loc, "translate", i), t_name, [s_.split], key=None)
            c.model((*loc, "init"), s_.init)
            up = s_.init[len(STUDENT_REF):] if s_.init.startswith(STUDENT_REF) else None
            if up == name:
                bad((*loc, "init"), "a student cannot start from itself")
            elif up in p.students and p.students[up].seeds and p.students[up].seeds != s_.seeds:
                bad((*loc, "init"), f"'{s_.init}' is trained with seeds {p.students[up].seeds}: a student "
                                    "starting from it needs the same seeds (seed s starts from seed s)")
            if s_.seeds is not None and "seed" in s_.params:
                bad((*loc, "seeds"), "give either 'seeds' or params.seed, not both")
            if s_.crossfit is not None and s_.seeds is not None:
                bad((*loc, "crossfit"), "give either 'crossfit' or 'seeds', not both (a cross-fitted student "
                                        "is one full model and its fold models, of one seed)")
            if s_.teacher is None and s_.candidates is None and s_.params.get("embed_on") not in ("corpus", "queries"):
                bad(loc, "a label-only student (no teacher) needs 'candidates' (a retrieve entry for negatives); "
                         "only params.embed_on: corpus or queries trains without them")
            else:
                c.problems.extend(_train_config_problems(c.lp, name, s_))
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        p, ds, out = lp.pipeline, lp.datasets, []
        for name, s in p.students.items():
            folds = [None, *range(s.crossfit)] if s.crossfit else [None]  # the full model, then the folds
            for seed, fold in [(sd, f) for sd in s.seeds or [None] for f in folds]:
                inputs = {}
                if s.teacher:
                    inputs["teacher"] = sid("teacher", s.teacher, s.split)
                if s.candidates:
                    inputs["candidates"] = sid("retrieve", s.candidates, s.split)
                if s.init.startswith(STUDENT_REF):
                    inputs["init"] = student_sid(p, s.init[len(STUDENT_REF):], seed)
                params = s.params if seed is None else {**s.params, "seed": seed}
                if fold is not None:
                    params = {**params, "query_folds": [fold, s.crossfit]}
                cfg = {"name": name, "family": s.family, "init": abs_model(s.init, lp.path.parent),
                       "dataset": ds[s.dataset], "split": s.split, "loss": s.loss,
                       "params": local_models(params, lp.path.parent)}  # embed_teacher's model
                if s.translate:
                    cfg["translate"] = [ds[t] for t in s.translate]
                stage_id = sid("student", name, seed=seed) if fold is None else sid("student", fold_name(name, fold))
                out.append(Stage(stage_id, "train", cfg, inputs, ds[s.dataset], ("students", name)))
        return out


SECTION = Students()



def _train_config_problems(lp: LoadedPipeline, name: str, s: StudentEntry) -> list[Problem]:
    """A student's params checked against the train stage's own config (when installed)."""
    try:
        from retrieval_kd.train.config import TrainConfig
    except ImportError:
        return []

    loc = ("students", name)
    out = []
    for k in s.params:
        if k == "query_folds":
            out.append((lp.line(*loc, "params", k), (f"students.{name}.params.{k}: set by the pipeline "
                        "(crossfit: K trains the fold models)")))
        elif k in PIPELINE_TRAIN_KEYS:
            out.append((lp.line(*loc, "params", k), (f"students.{name}.params.{k}: set by the pipeline "
                        "(family, init, dataset, split, teacher, candidates, loss, translate are the entry's "
                        "own keys)")))
        elif k not in TrainConfig.model_fields:
            allowed = sorted(set(TrainConfig.model_fields) - PIPELINE_TRAIN_KEYS)
            out.append((lp.line(*loc, "params", k), (f"students.{name}.params.{k}: unknown train setting "
                        f"(allowed: {', '.join(allowed)})")))
    if out:
        return out
    cfg = {"name": name, "family": s.family, "init": s.init, "dataset": lp.datasets.get(s.dataset, s.dataset),
           "split": s.split, "teacher": s.teacher, "loss": s.loss, "params": s.params,
           **({"candidates": s.candidates} if s.candidates else {}),
           **({"translate": [lp.datasets.get(t, t) for t in s.translate]} if s.translate else {})}
    try:
        TrainConfig(**train_config_data(cfg, None, Path("/nonexistent")))
    except RkdError as e:  # the loss string's own parser (parse_losses)
        where = (*loc, "loss") if s.loss is not None else loc
        out.append((lp.line(*where), f"{dotted(where)}: {e}"))
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
            out.append((lp.line(*where), f"{dotted(where)}: {msg}"))
    return out


# ---------------------------------------------------------------- the train adapter

PIPELINE_TRAIN_KEYS = frozenset({"family", "init", "output", "scores", "dataset", "split", "teacher",
                                 "candidates", "losses", "query_folds", "translate"})
"""TrainConfig fields the pipeline sets itself (a student's ``params`` may not)."""
SAVE_STEPS = 25
"""Checkpoint interval when a student's params give none: a killed pipeline loses at most
this many steps of a training stage (the trainer resumes from the last checkpoint)."""


def train_config_data(config: dict[str, Any], inputs: dict[str, Path] | None, out: Path) -> dict[str, Any]:
    """A student entry as TrainConfig data. Without ``inputs`` (validation before a run),
    placeholders stand for the upstream stores and runs the entry names."""
    init = config["init"]
    if init.startswith(STUDENT_REF):
        init = str(model_dir_of(inputs["init"])) if inputs else init
    data = {"save_steps": SAVE_STEPS, **(config.get("params") or {}), "family": config["family"], "init": init,
            "dataset": config["dataset"], "split": config["split"], "output": str(out / "model")}
    has_teacher = ("teacher" in inputs) if inputs is not None else bool(config.get("teacher"))
    if has_teacher:
        store = (inputs["teacher"] / stage_result(inputs["teacher"])["store"]) if inputs else out / "store"
        data.update(scores=[str(store)], teacher="store")
    else:
        data["teacher"] = "none"
        if "candidates" in (inputs if inputs is not None else config):
            data["candidates"] = str(run_file_of(inputs["candidates"])) if inputs else str(out / "run.trec")
    if config.get("translate"):
        data["translate"] = list(config["translate"])
    loss = config.get("loss")
    if loss is not None:
        data["losses"] = loss
    elif not has_teacher:
        data["losses"] = "infonce"  # the label-only objective
    return data


@register("train", resumable=True, runtime_keys=("save_total_limit", "logging_steps"),
          requires="retrieval_kd.train.stage", version=2)  # 2: bi-encoder losses use its similarity
def train(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Train the student (train_stage): from its teacher's score store, or label-only from a
    run's candidates. Checkpoints live in the stage's work folder, so a killed run resumes."""
    from retrieval_kd.models.params import count_parameters
    from retrieval_kd.train.config import TrainConfig
    from retrieval_kd.train.stage import train_stage

    out.mkdir(parents=True, exist_ok=True)
    try:
        cfg = TrainConfig(**train_config_data(config, inputs, out))
    except ValidationError as e:
        raise RkdError(f"student {config['name']}: " + "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}" for err in e.errors())) from None
    model = train_stage(cfg)
    man = read_manifest(model) or {}
    outs = man.get("outputs", {})
    return {"model": "model", "family": config["family"], "parameters": count_parameters(model),
            "loss_log": "model/manifest.json",
            "steps": outs.get("global_step"), "train_loss": outs.get("train_loss"),
            "throughput": {"examples_per_s": outs.get("examples_per_s")}}
