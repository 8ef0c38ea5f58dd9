"""``rkd eval``: score runs against a split's qrels with ranx."""

from __future__ import annotations

from pathlib import Path

import typer

from retrieval_kd.data.registry import load_dataset
from retrieval_kd.errors import RkdError
from retrieval_kd.eval.metrics import DEFAULT_METRICS, evaluate_run
from retrieval_kd.eval.results import (
    load_run_with_provenance,
    markdown_table,
    result_record,
    unique_names,
    write_results,
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
) -> None:
    """Evaluate runs: nDCG@10, MRR@10, Recall@100/1000, MAP by default."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    ds = load_dataset(dataset, split)
    records = []
    loaded = [load_run_with_provenance(path) for path in runs]
    for path, sys_name, (_, run, system) in zip(runs, unique_names([n for n, _, _ in loaded], runs), loaded):
        try:
            scores = evaluate_run(ds.qrels, run, names, ignore_identical_ids=ignore_identical_ids)
        except RkdError as e:
            raise RkdError(f"{path}: {e}") from None
        records.append(result_record(sys_name, scores, ds, system, names, ignore_identical_ids,
                                     len(run)))
    typer.echo(markdown_table(records))
    if out:
        js, md = write_results(records, out)
        console.print(f"results written to {js} and {md}")
