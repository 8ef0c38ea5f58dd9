"""The ``evals`` section: one eval stage per entry (``eval:NAME``) over systems named by
reference (``retrieve:NAME``, ``teacher:NAME``, ``reranker:NAME``, ``index:NAME``: each
section with a ``ref``), each taken on the eval's split; a seeded system stands for all its
seeds. The stage itself is retrieval_kd/pipeline/eval_stage.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from retrieval_kd.eval.compare import ALPHA, STAT_TEST
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem, dotted
from retrieval_kd.pipeline.plan import Stage, seed_input, sid
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.schema import Split, _Strict
from retrieval_kd.pipeline.sections import Section, ref_sections

ROLES = ("init", "twin", "distilled", "teacher")
"""A family's roles (FamilyEntry's fields naming systems), in table order."""


class FamilyEntry(_Strict):
    """A student family's systems in an eval (display names from its ``systems``)."""

    regime: str = ""
    """What the comparison is about (labels, compression, teacher), shown in the report."""
    init: str | None = None
    twin: str
    """The label-only student trained like ``distilled`` but without the teacher."""
    distilled: str
    teacher: str | None = None

    def roles(self) -> dict[str, str]:
        """Role -> system display name, for the roles given."""
        return {r: n for r in ROLES if (n := getattr(self, r)) is not None}


class EvalEntry(_Strict):
    dataset: str
    split: Split = "test"
    systems: dict[str, str] = Field(min_length=1)
    """Display name -> reference (``retrieve:NAME``, ``teacher:NAME``, ``reranker:NAME``,
    ``index:NAME``)."""
    baseline: str | None = None
    """The system the others are tested against (a display name in ``systems``)."""
    metrics: list[str] = ["ndcg@10", "mrr@10", "recall@100"]
    ignore_identical_ids: bool = True
    stat_test: Literal["student", "fisher", "tukey"] = STAT_TEST
    alpha: float = Field(ALPHA, gt=0, lt=1)
    families: dict[str, FamilyEntry] = {}
    """Family label -> its systems: distilled vs twin, and the share of the init-to-teacher gap."""


def ref_problem(p: Any, ref: str, dataset: str, split: str) -> str | None:
    """Why ``ref`` is not a system with a run on ``dataset``'s ``split`` (None when it is)."""
    refs = ref_sections()
    prefix, _, name = ref.partition(":")
    if prefix not in refs or not name:
        return (f"'{ref}' is not a system reference (write "
                + ", ".join(f"{k}:NAME" for k in refs) + ")")
    sec = refs[prefix]
    entries = getattr(p, sec.name)
    if name not in entries:
        return f"no {prefix} entry '{name}' ({sec.name}: {', '.join(entries) or 'none'})"
    e = entries[name]
    splits = sec.run_splits(e)
    if why := sec.ref_problem(name, e):
        return why
    if e.dataset != dataset and e.dataset in p.datasets and dataset in p.datasets:
        return f"{prefix} '{name}' is on dataset '{e.dataset}', not '{dataset}'"
    if split not in splits:
        return f"{prefix} '{name}' has no run on split '{split}' (splits: {', '.join(splits)})"
    return None


def ref_seeds(p: Any, ref: str) -> list[int] | None:
    """The seeds a (valid) system reference comes in."""
    prefix, _, name = ref.partition(":")
    return ref_sections()[prefix].seeds(p, name)


def ref_stages(p: Any, ref: str, split: str) -> dict[int | None, str]:
    """The stage ids an eval system reference stands for on ``split``, by seed (``{None: id}``
    for an unseeded entry)."""
    prefix, _, name = ref.partition(":")
    sec = ref_sections()[prefix]
    return {seed: sec.run_stage(name, split, seed) for seed in sec.seeds(p, name) or [None]}


def _seed_problems(lp: LoadedPipeline, name: str, ev: EvalEntry) -> list[Problem]:
    """Families naming systems of the eval; seeded systems tested the one way seeds allow."""
    p, loc, out = lp.pipeline, ("evals", name), []
    for fam, f in ev.families.items():
        for role, disp in f.roles().items():
            if disp not in ev.systems:
                where = (*loc, "families", fam, role)
                out.append((lp.line(*where), f"{dotted(where)}: '{disp}' is not one of the systems "
                                             f"({', '.join(ev.systems)})"))
    seeded = [d for d, ref in ev.systems.items() if ref_problem(p, ref, ev.dataset, ev.split) is None
              and ref_seeds(p, ref)]
    if seeded and ev.stat_test != "student":
        out.append((lp.line(*loc, "stat_test"), f"evals.{name}.stat_test: '{ev.stat_test}' is ranx's; with seeded "
                    f"systems ({', '.join(seeded)}) the test is a paired t-test over queries on "
                    "seed-averaged scores (stat_test: student)"))
    return out


class Evals(Section):
    name, entry, stage = "evals", EvalEntry, "eval"

    def check(self, c: Checks) -> list[Problem]:
        p = c.p
        for name, ev in p.evals.items():
            loc = ("evals", name)
            c.dataset(loc, ev.dataset, [ev.split])
            for disp, ref in ev.systems.items():
                why = ref_problem(p, ref, ev.dataset, ev.split)
                if why:
                    c.bad((*loc, "systems", disp), why)
            if ev.baseline is not None and ev.baseline not in ev.systems:
                c.bad((*loc, "baseline"), f"baseline '{ev.baseline}' is not one of the systems "
                                          f"({', '.join(ev.systems)})")
            c.problems.extend(_seed_problems(c.lp, name, ev))
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        p, ds, out = lp.pipeline, lp.datasets, []
        for name, ev in p.evals.items():
            inputs, seeds = {}, {}
            for disp, ref in ev.systems.items():
                ids = ref_stages(p, ref, ev.split)
                if list(ids) == [None]:
                    inputs[disp] = ids[None]
                else:
                    seeds[disp] = list(ids)
                    inputs.update({seed_input(disp, sd): stage_id for sd, stage_id in ids.items()})
            cfg = {"name": name, "dataset": ds[ev.dataset], "split": ev.split, "systems": list(ev.systems),
                   "refs": dict(ev.systems), "baseline": ev.baseline, "metrics": ev.metrics,
                   "ignore_identical_ids": ev.ignore_identical_ids, "stat_test": ev.stat_test,
                   "alpha": ev.alpha}
            if seeds:  # absent otherwise: an eval without seeded systems keeps its key
                cfg["seeds"] = seeds
            if ev.families:
                cfg["families"] = {f: fam.model_dump() for f, fam in ev.families.items()}
            out.append(Stage(sid("eval", name), "eval", cfg, inputs, ds[ev.dataset], ("evals", name)))
        return out


SECTION = Evals()


@register("eval")
def evaluate(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """evaluate_run + result_record per system (what ``rkd eval`` writes; a seeded system's
    mean over its seeds), significance against the baseline, and the families' comparison."""
    from retrieval_kd.pipeline.eval_stage import evaluate_stage

    return evaluate_stage(config, inputs, out)
