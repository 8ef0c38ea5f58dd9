"""The pipeline's ``queries`` stage and the datasets it produces.

A pipeline names generated queries as a dataset like any other::

    queries:
      gq: {dataset: scifact, model: qwen2.5-coder-0.5b, count: 500, seed: 42, max_new_tokens: 32}
    datasets:
      scifact: {source: scifact}
      scifact-gq: {queries: gq}          # the BEIR folder stage queries:gq writes (split: train)

Every stage on ``scifact-gq`` gets the queries stage as an input (``@dataset``) instead of a
dataset fingerprint in its key (the queries stage's key covers the source dataset, the model
and every generation setting), and the runner hands it the folder's path as its ``dataset``.

This module is the pipeline's ``queries`` section (retrieval_kd/pipeline/sections.py): its
entries' checks, stages and adapters; the ``datasets`` section resolves ``{queries: NAME}``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from retrieval_kd.pipeline.adapters import run_file_of, stage_result
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem
from retrieval_kd.pipeline.plan import Stage, abs_model
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.sections import Section
from retrieval_kd.queries.params import RUNTIME_KEYS, QueriesEntry

DATASET_INPUT = "@dataset"
"""The input name under which a stage on a generated dataset gets its queries stage."""
SECTION = "queries"


def derived_source(name: str, filtered: str | None = None) -> str:
    """What stands for a generated dataset in stage configs until the runner resolves it: the
    producing stage's id (``queries:NAME``, or ``filter:ALIAS`` for a teacher-filtered one)."""
    return f"filter:{filtered}" if filtered else f"{SECTION}:{name}"


def filter_problem(p: Any, entry: Any) -> str | None:
    """Why a datasets entry's filter cannot work (None when it can)."""
    name = entry.filter.teacher
    t = p.teachers.get(name)
    if t is None:
        return f"no teacher '{name}' (teachers: {', '.join(p.teachers) or 'none'})"
    td = p.datasets.get(t.dataset)
    if td is None or td.queries != entry.queries or td.filter is not None:
        return (f"teacher '{name}' scores dataset '{t.dataset}': a filter's teacher scores the unfiltered "
                f"generated queries (a datasets entry {{queries: {entry.queries}}})")
    split = p.queries[entry.queries].split
    if split not in t.splits:
        return f"teacher '{name}' does not score split '{split}' (splits: {', '.join(t.splits)})"
    return None


class Queries(Section):
    """The ``queries`` section: one ``queries`` stage per entry, and one ``queries.filter``
    stage per datasets entry filtering its generated queries."""

    name, entry, stage = SECTION, QueriesEntry, "queries"

    def check(self, c: Checks) -> list[Problem]:
        for name, q in c.p.queries.items():
            c.dataset((SECTION, name), q.dataset, [])
            if q.base_url is None and q.model is not None:
                c.model((SECTION, name, "model"), q.model)
                if why := generator_problem(q.model):
                    c.bad((SECTION, name, "model"), why)
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        """One ``queries`` stage per entry (a relative GGUF path made absolute), then the filters."""
        out = []
        for name, q in lp.pipeline.queries.items():
            params = q.model_dump(exclude={"dataset"})
            if q.model is not None and q.base_url is None:
                params["model"] = abs_model(q.model, lp.path.parent)
            src = lp.datasets[q.dataset]
            out.append(Stage(derived_source(name), "queries", {"dataset": src, "name": name, "params": params,
                                                              "backend": "openai" if q.base_url else "llama-cpp"},
                             dataset=src, loc=(SECTION, name)))
        for alias, entry in lp.pipeline.datasets.items():
            if entry.filter is not None:
                split = lp.pipeline.queries[entry.queries].split
                cfg = {"name": alias, "split": split, "top_k": entry.filter.top_k, "teacher": entry.filter.teacher}
                out.append(Stage(derived_source(entry.queries, alias), "queries.filter", cfg,
                                 {"queries": derived_source(entry.queries),
                                  "teacher": f"teacher:{entry.filter.teacher}@{split}"},
                                 loc=("datasets", alias)))
        return out

    def link(self, stages: list[Stage], lp: LoadedPipeline) -> list[Stage]:
        """Stages reading a generated dataset depend on its queries stage (and carry no dataset
        fingerprint of their own: the upstream key stands for the content)."""
        generated = {lp.datasets[a] for a in lp.derived}
        for s in stages:
            if s.dataset in generated:
                s.inputs[DATASET_INPUT] = s.dataset
                s.dataset = None
        return stages


QUERIES = Queries()


def resolve_dataset(config: dict[str, Any], inputs: dict[str, Path]) -> dict[str, Any]:
    """The config an adapter gets: a generated dataset's placeholder replaced by its folder."""
    if DATASET_INPUT not in inputs:
        return config
    d = inputs[DATASET_INPUT]
    return {**config, "dataset": str(d / stage_result(d)["dataset"])}


def splits_of(lp: LoadedPipeline, alias: str) -> list[str] | None:
    """The one split a generated dataset has (None for other datasets)."""
    q = lp.pipeline.queries.get(lp.derived.get(alias, ""))
    return [q.split] if q is not None else None


def generator_problem(model: str) -> str | None:
    """Why a registered model cannot generate queries (None for generators and paths)."""
    from retrieval_kd.models.registry import model_registry

    reg = model_registry()
    if model in reg and reg[model].family != "causal-lm":
        causal = ", ".join(n for n, s in reg.items() if s.family == "causal-lm")
        return f"model '{model}' is a {reg[model].family}, not a generator (causal-lm: {causal})"
    return None


@register("queries", resumable=True, runtime_keys=RUNTIME_KEYS)
def queries(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Generate the dataset into ``out/<name>``; the generation chunks live in ``out/work``
    until it is written, so a killed stage resumes."""
    from retrieval_kd.artifacts import read_manifest
    from retrieval_kd.queries.generate import generate_queries
    from retrieval_kd.queries.params import QueryGenParams

    params = QueryGenParams(**config["params"])
    folder = out / config["name"]
    out.mkdir(parents=True, exist_ok=True)
    man = read_manifest(folder)
    if man is None:  # else written before a kill, not yet renamed into place
        man = generate_queries(config["dataset"], folder, params, work=out / "work", name=config["name"],
                               progress=True, echo=lambda m: None)
    shutil.rmtree(out / "work", ignore_errors=True)
    o = man["outputs"]
    return {"dataset": config["name"], "split": o["split"], "queries": o["kept"], "passages": o["passages"],
            "rejected": o["rejected"], "generator": man.get("generator"),
            "throughput": {"queries_per_s": man["throughput"]["queries_per_s"]}}


@register("queries.filter")
def queries_filter(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """The generated dataset keeping the queries whose passage the teacher's run (its scores as
    a reranking) ranks within top_k (retrieval_kd/queries/filter.py)."""
    from retrieval_kd.queries.filter import filter_queries

    src = inputs["queries"] / stage_result(inputs["queries"])["dataset"]
    out.mkdir(parents=True, exist_ok=True)
    man = filter_queries(src, config["split"], run_file_of(inputs["teacher"]), config["top_k"],
                         out / config["name"])
    o = man["outputs"]
    return {"dataset": config["name"], "split": o["split"], "queries": o["kept"], "dropped": o["dropped"],
            "mean_source_rank": o["mean_source_rank"]}
