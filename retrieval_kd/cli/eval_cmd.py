"""``rkd eval``: score runs against a split's qrels with ranx."""

from __future__ import annotations

from pathlib import Path

import typer

from retrieval_kd.data.registry import load_dataset
from retrieval_kd.errors import RkdError
from retrieval_kd.eval.compare import ALPHA, STAT_TEST, significance
from retrieval_kd.eval.metrics import DEFAULT_METRICS, evaluate_run
from retrieval_kd.eval.results import (
    load_run_with_provenance,
    markdown_table,
    result_record,
    significance_record,
    significance_table,
    unique_names,
    write_results,
    write_significance,
)
from retrieval_kd.progress import console


def eval_runs(
    runs: list[Path] = typer.Argument(..., help="Run directories (run.trec + manifest) or TREC files."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered name or directory."),
    split: str = typer.Option("test", "--split", "-s"),
    metrics: str = typer.Option(",".join(DEFAULT_METRICS), help="Comma-separated ranx metrics."),
    ignore_identical_ids: bool = typer.Option(
        True, "--ignore-identical-ids/--keep-identical-ids",
        help="BEIR's flag: drop a retrieved document whose id equals the query id."),
    out: Path = typer.Option(None, "--out", "-o", help="Write <out>.json and <out>.md."),
    baseline: str = typer.Option(
        None, "--baseline",
        help="A system's name in the table (or the run path as given): test every other run against "
             f"it, a paired t-test over the judged queries (ranx 'student', alpha {ALPHA}) as rkd run's "
             "eval does; printed, and with --out written to <out>.significance.json."),
) -> None:
    """Evaluate runs: nDCG@10, MRR@10, Recall@100/1000, MAP by default."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    ds = load_dataset(dataset, split)
    records = []
    loaded = [load_run_with_provenance(path) for path in runs]
    systems = unique_names([n for n, _, _ in loaded], runs)
    base = _baseline(baseline, systems, runs) if baseline is not None else None
    for path, sys_name, (_, run, system) in zip(runs, systems, loaded):
        try:
            scores = evaluate_run(ds.qrels, run, names, ignore_identical_ids=ignore_identical_ids,
                                  relevance_level=ds.relevance_level)
        except RkdError as e:
            raise RkdError(f"{path}: {e}") from None
        records.append(result_record(sys_name, scores, ds, system, names, ignore_identical_ids,
                                     len(run)))
    typer.echo(markdown_table(records))
    sig = None
    if base is not None:
        sig = significance_record(base, significance(
            ds.qrels, {n: run for n, (_, run, _) in zip(systems, loaded)}, base, names,
            stat_test=STAT_TEST, alpha=ALPHA, ignore_identical_ids=ignore_identical_ids,
            relevance_level=ds.relevance_level))
        typer.echo(significance_table(sig, names))
    if out:
        js, md = write_results(records, out)
        console.print(f"results written to {js} and {md}")
        if sig is not None:
            console.print(f"significance written to {write_significance(sig, out)}")


def _baseline(baseline: str, systems: list[str], runs: list[Path]) -> str:
    """The system ``--baseline`` names: a name of the table, or a run path as it was given."""
    for name, path in zip(systems, runs):
        if baseline in (name, str(path)):
            if len(systems) < 2:
                raise RkdError(f"--baseline {baseline}: give at least one other run to test against it")
            return name
    raise RkdError(f"--baseline {baseline}: no such system (systems: {', '.join(systems)})")
