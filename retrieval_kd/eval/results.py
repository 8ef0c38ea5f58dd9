"""Evaluation results with their protocol, as JSON and a Markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import atomic_write_text, now_iso, sha256_file, write_json
from retrieval_kd.data.runfiles import RUN_FILE, locate_run
from retrieval_kd.data.trec import load_trec_run
from retrieval_kd.data.types import Dataset, Run
from retrieval_kd.eval.compare import ALPHA, STAT_TEST, STAT_TESTS


def system_name(run_file: Path, manifest: dict[str, Any] | None) -> str:
    if manifest and manifest.get("params", {}).get("name"):
        return str(manifest["params"]["name"])
    return run_file.parent.name if run_file.name == RUN_FILE else run_file.stem


def unique_names(names: list[str], paths: list[Path]) -> list[str]:
    """System names for a results table: where two runs share a name (every ``rkd retrieve
    bm25`` run is "bm25"), each of those is told apart by the path it was given as."""
    return [f"{n} ({p})" if names.count(n) > 1 else n for n, p in zip(names, paths)]


def load_run_with_provenance(path: str | Path) -> tuple[str, Run, dict[str, Any]]:
    """Read a run and describe the system that produced it (from its manifest, if any)."""
    run_file, man = locate_run(path)
    run = load_trec_run(run_file)
    system: dict[str, Any] = {"run_file": str(run_file), "run_sha256": sha256_file(run_file)}
    if man:
        system["stage"] = man.get("kind")
        system["params"] = man.get("params", {})
        if "model" in man.get("inputs", {}):
            system["model"] = man["inputs"]["model"]
    return system_name(run_file, man), run, system


def result_record(
    name: str, metrics: dict[str, float], dataset: Dataset, system: dict[str, Any],
    metric_names: list[str], ignore_identical_ids: bool, n_run_queries: int,
) -> dict[str, Any]:
    """One system's result and everything needed to reproduce the number."""
    from importlib.metadata import version

    return {
        "system": name,
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
        "protocol": {
            **dataset.protocol(),
            "metrics": metric_names,
            "cutoffs": sorted({int(m.split("@")[1].split("-l")[0]) for m in metric_names if "@" in m}),
            "ignore_identical_ids": ignore_identical_ids,
            "judged_queries": len(dataset.qrels),
            "run_queries": n_run_queries,
            "evaluator": f"ranx {version('ranx')}",
            "system": system,
            "evaluated": now_iso(),
        },
    }


def metric_text(record: dict[str, Any], metric: str) -> str:
    """A record's metric as shown in tables: ``0.6012``, or for a system trained with several
    seeds ``0.6012 ± 0.0031 (3 seeds)`` (mean ± sample sd)."""
    seeds = record.get("seeds")
    if not seeds:
        return f"{record['metrics'][metric]:.4f}"
    return mean_sd_text(record["metrics"][metric], seeds["sd"][metric], seeds["n_seeds"])


def mean_sd_text(mean: float, sd: float | None, n_seeds: int) -> str:
    sd_text = "" if sd is None else f" ± {sd:.4f}"
    return f"{mean:.4f}{sd_text} ({n_seeds} seed{'s' if n_seeds > 1 else ''})"


def markdown_table(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    metrics = list(records[0]["metrics"])
    p = records[0]["protocol"]
    head = (f"**{p['dataset']}** / {p['split']} ({p['judged_queries']} judged queries, "
            f"{p['n_docs']} docs; ranx, ignore_identical_ids={p['ignore_identical_ids']})\n\n")
    lines = ["| system | " + " | ".join(metrics) + " |",
             "|---|" + "---:|" * len(metrics)]
    for r in records:
        lines.append(f"| {r['system']} | " + " | ".join(metric_text(r, m) for m in metrics) + " |")
    return head + "\n".join(lines) + "\n"


def write_results(records: list[dict[str, Any]], out: str | Path) -> tuple[Path, Path]:
    """Write ``<out>.json`` (records with protocol) and ``<out>.md`` (table)."""
    js, md = _beside(out, ".json"), _beside(out, ".md")
    write_json(js, {"results": records})
    atomic_write_text(md, markdown_table(records))
    return js, md


def significance_record(baseline: str | None, systems: dict[str, Any], *, stat_test: str = STAT_TEST,
                        alpha: float = ALPHA, test: str | None = None) -> dict[str, Any]:
    """A pipeline eval's ``significance.json`` (and ``rkd eval --baseline``'s): the baseline, the
    test and, per system, {metric: {p_value, significant, delta, ...}}
    (:func:`retrieval_kd.eval.compare.significance`); ``test`` names a test that is not ranx's
    ``stat_test`` (seeded systems)."""
    return {"baseline": baseline, "stat_test": stat_test, "alpha": alpha,
            **({"test": test} if test else {}), "systems": systems}


def p_value_text(s: dict[str, Any]) -> str:
    """A test's p-value as tables show it: ``0.0123``, starred when significant; ``n/a`` where
    the two systems score every query alike (no test)."""
    if s.get("p_value") is None:
        return "n/a"
    return f"{s['p_value']:.3g}" + ("*" if s.get("significant") else "")


def significance_table(sig: dict[str, Any], metrics: list[str]) -> str:
    """A :func:`significance_record` as Markdown: each system's difference from the baseline
    and its p-value, per metric."""
    test = STAT_TESTS.get(sig["stat_test"], sig["stat_test"])
    head = (f"Against **{sig['baseline']}** ({test} over the judged queries via ranx compare): "
            f"delta (p-value, * p < {sig['alpha']})\n\n")
    lines = ["| system | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, per_metric in sig["systems"].items():
        cells = (f"{per_metric[m]['delta']:+.4f} ({p_value_text(per_metric[m])})" for m in metrics)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def write_significance(sig: dict[str, Any], out: str | Path) -> Path:
    """Write ``<out>.significance.json`` beside :func:`write_results`' files."""
    path = _beside(out, ".significance.json")
    write_json(path, sig)
    return path


def _beside(out: str | Path, ending: str) -> Path:
    """``<out><ending>``, ``out`` given with or without ``.json`` / ``.md``."""
    out = Path(out)
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    # with_name, not with_suffix: names such as "scifact-test.v2" keep their dots
    return out.with_name(out.name + ending)
