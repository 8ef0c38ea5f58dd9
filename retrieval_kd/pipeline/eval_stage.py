"""The eval stage: each system's metrics (a seeded system's: the mean over its seeds, with the
sd and each seed's value), significance against the baseline, and the students-by-family
comparison (``families.json``).

Significance: an eval without seeded systems keeps ranx's ``compare`` (``stat_test``); one with
seeded systems tests every system by a paired t-test over the judged queries on per-query
scores averaged over each system's seeds (eval/compare.py), and says so (``test``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import atomic_dir, write_json
from retrieval_kd.data.types import Run
from retrieval_kd.eval.compare import PAIRED_TEST, gap_closed, paired_test, seed_summary, significance
from retrieval_kd.pipeline.adapters import run_file_of, stage_result
from retrieval_kd.pipeline.kinds.evals import ROLES
from retrieval_kd.pipeline.plan import seed_input


@dataclass
class SystemRuns:
    """One eval system: its runs and metrics, one per seed (one for an unseeded system)."""

    name: str
    seeds: list[int] | None
    dirs: list[Path]
    runs: list[Run]
    per_query: list[dict[str, dict[str, float]]]
    """Per seed: metric -> judged query -> value (ranx, computed once per run)."""

    @property
    def scores(self) -> list[dict[str, float]]:
        """Per seed: each metric's mean over the judged queries."""
        return [{m: sum(v.values()) / len(v) for m, v in pq.items()} for pq in self.per_query]

    def summary(self, metric: str) -> dict[str, Any]:
        return seed_summary([s[metric] for s in self.scores])

    def seed_averaged(self, metric: str) -> dict[str, float]:
        """``metric`` per judged query, averaged over the seeds."""
        n = len(self.per_query)
        return {q: sum(pq[metric][q] for pq in self.per_query) / n for q in self.per_query[0][metric]}


def system_dirs(config: dict[str, Any], inputs: dict[str, Path], name: str) -> list[Path]:
    """The stage directories of a system's runs, seed by seed."""
    seeds = (config.get("seeds") or {}).get(name)
    return [inputs[seed_input(name, s)] for s in seeds] if seeds else [inputs[name]]


def system_costs(dirs: list[Path]) -> dict[str, Any]:
    """A system's query latency (the mean over its seeds' stages) and parameter count."""
    results = [stage_result(d) for d in dirs]
    lat = [r.get("latency_ms_per_query") for r in results]
    return {"latency_ms_per_query": round(sum(lat) / len(lat), 3) if lat and None not in lat else None,
            "parameters": results[0].get("parameters") if results else None}


PerQuery = Callable[[str, str], dict[str, float]]
"""(system, metric) -> that metric per judged query, averaged over the system's seeds."""


def _paired(a: dict[str, float], b: dict[str, float], alpha: float) -> dict[str, Any]:
    t = paired_test(a, b)
    return {"p_value": t["p_value"], "significant": t["p_value"] is not None and t["p_value"] < alpha,
            "delta": t["delta"], "t": t["t"], "n_queries": t["n_queries"]}


def _seeded_record(s: SystemRuns, provenance: list[dict[str, Any]], ds, metrics: list[str], iii: bool
                   ) -> dict[str, Any]:
    """A seeded system's result record: the mean over seeds as its metrics, plus ``seeds``."""
    from retrieval_kd.eval.results import result_record

    summ = {m: s.summary(m) for m in metrics}
    system = {k: v for k, v in provenance[0].items() if k not in ("run_file", "run_sha256", "stage_dir")}
    system["runs"] = [{"seed": seed, "run_file": p["run_file"], "run_sha256": p["run_sha256"],
                       "stage_dir": p["stage_dir"]} for seed, p in zip(s.seeds or [], provenance)]
    rec = result_record(s.name, {m: summ[m]["mean"] for m in metrics}, ds, system, metrics, iii, len(s.runs[0]))
    rec["seeds"] = {"seeds": s.seeds, "n_seeds": len(s.runs),
                    "sd": {m: None if summ[m]["sd"] is None else round(summ[m]["sd"], 4) for m in metrics},
                    "per_seed": {m: [round(v, 4) for v in summ[m]["per_seed"]] for m in metrics}}
    return rec


def family_results(config: dict[str, Any], systems: dict[str, SystemRuns], costs: dict[str, dict[str, Any]],
                   pq: PerQuery) -> dict[str, Any]:
    """Per family: each role's metrics (mean, sd, per seed), parameters and latency; distilled
    vs twin (delta, paired test) and the share of the init-to-teacher gap closed, per metric."""
    metrics, alpha = list(config["metrics"]), float(config["alpha"])
    out = {}
    for fam, f in config["families"].items():
        names = {r: f[r] for r in ROLES if f.get(r)}
        roles = {r: {"system": n, "ref": config["refs"][n], "seeds": systems[n].seeds,
                     "metrics": {m: systems[n].summary(m) for m in metrics}, **costs[n]}
                 for r, n in names.items()}

        def mean(role: str, m: str) -> float | None:
            return roles[role]["metrics"][m]["mean"] if role in roles else None

        out[fam] = {"regime": f.get("regime") or "", "roles": roles,
                    "distilled_vs_twin": {m: _paired(pq(names["distilled"], m), pq(names["twin"], m), alpha)
                                          for m in metrics},
                    "gap_closed": {m: gap_closed(mean("init", m), mean("distilled", m), mean("teacher", m))
                                   for m in metrics}}
    return {"test": PAIRED_TEST, "alpha": alpha, "metrics": metrics, "families": out}


def evaluate_stage(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Evaluate every system of an eval stage into ``out`` (results, significance, families)."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.eval.metrics import evaluate_run
    from retrieval_kd.eval.results import (
        load_run_with_provenance,
        result_record,
        significance_record,
        write_results,
    )

    ds = load_dataset(config["dataset"], config["split"])
    metrics, iii = list(config["metrics"]), bool(config["ignore_identical_ids"])
    seeded = config.get("seeds") or {}
    records, systems = [], {}
    for disp in config["systems"]:
        dirs, runs, per_q, provenance = system_dirs(config, inputs, disp), [], [], []
        for d in dirs:
            _, run, system = load_run_with_provenance(run_file_of(d))
            system["ref"] = config["refs"][disp]
            system["stage_dir"] = d.name
            runs.append(run)
            per_q.append(evaluate_run(ds.qrels, run, metrics, ignore_identical_ids=iii, per_query=True,
                                      relevance_level=ds.relevance_level))
            provenance.append(system)
        s = systems[disp] = SystemRuns(disp, seeded.get(disp), dirs, runs, per_q)
        records.append(_seeded_record(s, provenance, ds, metrics, iii) if s.seeds else
                       result_record(disp, s.scores[0], ds, provenance[0], metrics, iii, len(runs[0])))

    def pq(name: str, m: str) -> dict[str, float]:
        return systems[name].seed_averaged(m)

    base, sig = config.get("baseline"), None
    if base and len(systems) > 1 and seeded:
        sig = {n: {m: _paired(pq(n, m), pq(base, m), config["alpha"]) for m in metrics} for n in systems if n != base}
    elif base and len(systems) > 1:
        sig = significance(ds.qrels, {n: s.runs[0] for n, s in systems.items()}, base, metrics,
                           stat_test=config["stat_test"], alpha=config["alpha"], ignore_identical_ids=iii,
                           relevance_level=ds.relevance_level)
    sig_file = significance_record(base, sig or {}, stat_test=config["stat_test"], alpha=config["alpha"],
                                   test=PAIRED_TEST if seeded else None)
    families = None
    if config.get("families"):
        costs = {n: system_costs(s.dirs) for n, s in systems.items()}
        families = family_results(config, systems, costs, pq)
    with atomic_dir(out) as tmp:
        write_results(records, tmp / "results")
        write_json(tmp / "significance.json", sig_file)
        if families:
            write_json(tmp / "families.json", families)
    return {"results": "results.json", "significance": "significance.json",
            **({"families": "families.json"} if families else {}),
            "metrics": {r["system"]: r["metrics"] for r in records}}
