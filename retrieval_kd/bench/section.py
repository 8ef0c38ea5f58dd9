"""The pipeline's ``benchmarks`` section: a model, BM25 or a pipeline student over a suite.

::

    benchmarks:
      beir-bm25: {suite: beir}                                  # BM25
      beir-minilm: {suite: beir, model: minilm-l6}              # exact dense retrieval
      beir-kd: {suite: beir, model: "student:dense-kd", index: flat}

An entry is one retrieve stage (BM25, exact dense) or index + search stages per dataset split of
the suite that has a local copy when the plan is made (``benchmark:NAME.<dataset>@<split>``,
``benchmark-index:NAME.<dataset>``), then ``benchmark:NAME``, which writes the suite's table
(``bench.md`` / ``bench.json``, as ``rkd bench``) into its stage folder. A student is taken
through an index of its family (one model: a seeded student is refused). Index stages read a
dataset's corpus through its ``test`` split (the index stage's convention), so a student or an
``index`` needs suites whose datasets have one (BEIR).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from retrieval_kd.artifacts import sha256_file
from retrieval_kd.bench.run import alias
from retrieval_kd.bench.suites import SUITES_FILE, Unit, get_suite, suite_rows, suites
from retrieval_kd.bench.system import BenchSystem
from retrieval_kd.data.registry import REGISTRY_FILE
from retrieval_kd.errors import RkdError
from retrieval_kd.families import Family
from retrieval_kd.families import get as get_family
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem
from retrieval_kd.pipeline.plan import Stage, abs_model, sid
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.schema import STUDENT_REF, _Strict
from retrieval_kd.pipeline.sections import Section, register_section


class BenchmarkEntry(_Strict):
    suite: str
    model: str | None = None
    """A registered name, HF id, path or ``student:NAME``; none: BM25."""
    family: Family | None = None
    """The model's family (an indexable one); default: a registered model's own, else bi-encoder."""
    index: Literal["flat", "hnsw", "ivfpq"] | None = None
    k: int = Field(1000, gt=0)


def _student(entry: BenchmarkEntry) -> str | None:
    return entry.model[len(STUDENT_REF):] if entry.model and entry.model.startswith(STUDENT_REF) else None


class Benchmarks(Section):
    name, entry, stage = "benchmarks", BenchmarkEntry, "benchmark"

    def check(self, c: Checks) -> list[Problem]:
        for name, b in c.p.benchmarks.items():
            loc = ("benchmarks", name)
            if b.suite not in suites():
                c.bad((*loc, "suite"), f"unknown suite '{b.suite}' (suites: {', '.join(suites())})")
            if (student := _student(b)) is not None:
                s = c.p.students.get(student)
                if s is None:
                    c.bad((*loc, "model"), f"no student '{student}' (students: {', '.join(c.p.students) or 'none'})")
                elif not get_family(s.family).indexable:
                    c.bad((*loc, "model"), f"student '{student}' is a {s.family}: benchmark retrieval models "
                                           "(a reranker is evaluated with rerankers + evals)")
                elif s.seeds and len(s.seeds) > 1:
                    c.bad((*loc, "model"), f"student '{student}' is trained with seeds {s.seeds}: benchmark one "
                                           "model (a student without seeds, or its folder as a path)")
            elif b.model:
                c.model((*loc, "model"), b.model)
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        out = []
        for name, b in lp.pipeline.benchmarks.items():
            rows = [r for r in suite_rows(get_suite(b.suite)) if r.available]
            student = _student(b)
            family = lp.pipeline.students[student].family if student else b.family
            model = b.model if student else (abs_model(b.model, lp.path.parent) if b.model else None)
            system = BenchSystem(model=model, family=family, index=b.index or ("flat" if student else None), k=b.k)
            runs: dict[str, str] = {}
            for u in dict.fromkeys(u for r in rows for u in r.units):
                out += self._unit_stages(name, b, system, student, u, lp)
                runs[_input(u)] = out[-1].id
            cfg = {"name": name, "suite": b.suite, "system": system.model_dump(), "student": student,
                   # the protocols and published numbers the table is made from
                   "registry_sha256": sha256_file(REGISTRY_FILE), "suites_sha256": sha256_file(SUITES_FILE),
                   "units": {_input(u): {"source": u.source, "split": u.split, "subset": u.subset}
                             for r in rows for u in r.units}}
            inputs = {**runs, **({"student": sid("student", student)} if student else {})}
            out.append(Stage(sid("benchmark", name), "benchmark", cfg, inputs, None, ("benchmarks", name)))
        return out

    def _unit_stages(self, name: str, b: BenchmarkEntry, system: BenchSystem, student: str | None, u: Unit,
                     lp: LoadedPipeline) -> list[Stage]:
        from retrieval_kd.models.backends import keyed_params
        from retrieval_kd.retrieve.bm25 import BM25Params
        from retrieval_kd.retrieve.dense import DenseParams

        entry, loc = f"{name}.{alias(u)}", ("benchmarks", name)
        run_id = sid("benchmark", entry, u.split)
        if student or system.uses_index:
            ix = sid("benchmark-index", entry)
            cfg = {"name": entry, "dataset": u.source, "family": system.family, "model": system.model,
                   "kind": system.index, "params": keyed_params({})}
            return [Stage(ix, "index", cfg, {"student": sid("student", student)} if student else {}, u.source, loc),
                    Stage(run_id, "search", {"name": entry, "dataset": u.source, "split": u.split, "k": b.k,
                                             "params": {}}, {"index": ix}, u.source, loc)]
        cfg: dict[str, Any] = {"dataset": u.source, "split": u.split, "k": b.k, "name": entry}
        if system.first_stage == "bm25":
            return [Stage(run_id, "retrieve.bm25", {**cfg, "params": BM25Params().model_dump()}, dataset=u.source,
                          loc=loc)]
        return [Stage(run_id, "retrieve.dense", {**cfg, "params": DenseParams().model_dump(), "model": system.model},
                      dataset=u.source, loc=loc)]


def _input(u: Unit) -> str:
    return f"run:{alias(u)}@{u.split}"


SECTION = register_section(Benchmarks())


@register("benchmark")
def benchmark(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """The suite's table (as ``rkd bench`` writes it) from the runs of the entry's stages."""
    from retrieval_kd.artifacts import write_benchmark
    from retrieval_kd.bench.run import bench_record, markdown
    from retrieval_kd.pipeline.adapters import model_dir_of

    suite = get_suite(config["suite"])
    params = dict(config["system"])
    if config.get("student"):
        params["model"] = str(model_dir_of(inputs["student"]))
    system = BenchSystem(**params)
    rows = suite_rows(suite)
    stages = {}
    for r in rows:
        for u in r.units:
            if r.available and _input(u) not in inputs:
                raise RkdError(f"benchmark {config['name']}: {u.source} ({u.split}) became available after the "
                               "plan was made; run again to plan it")
            if _input(u) in inputs:
                stages[u] = inputs[_input(u)]
    for r in rows:  # a dataset gone since the plan: listed as not available
        if r.available and any(u not in stages for u in r.units):
            r.missing = {u.source: ["(removed since the plan)"] for u in r.units if u not in stages}
    out.mkdir(parents=True, exist_ok=True)
    result = bench_record(suite, system, rows, stages, out)
    write_benchmark(out / "bench", result, markdown, note=f"pipeline benchmark {config['name']}")
    return {"table": "bench.md", "json": "bench.json",
            "average": {m: a["mean"] for m, a in result["average"].items()},
            "datasets_run": sum(r["status"] == "ran" for r in result["rows"]), "datasets": len(result["rows"])}
