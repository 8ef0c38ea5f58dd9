"""``rkd data``: the dataset registry and validation."""

from __future__ import annotations

import typer
from rich.table import Table

from retrieval_kd.data.registry import describe, load_dataset, registry
from retrieval_kd.progress import console
from retrieval_kd.settings import DATA_HOME_ENV, data_home

app = typer.Typer(no_args_is_help=True, help="Datasets: list the registry, validate a dataset.")


@app.command("list")
def list_datasets() -> None:
    """List registered datasets, their sources and whether a local copy exists."""
    t = Table(title=f"datasets (data home: {data_home()}, set with ${DATA_HOME_ENV})")
    for col in ("name", "format", "splits", "local copy", "source"):
        t.add_column(col)
    for spec in registry().values():
        d = describe(spec)
        t.add_row(d["name"], d["format"], ",".join(d["splits"]), d["local"] or "-", d["source"])
    console.print(t)


@app.command("validate")
def validate(
    dataset: str = typer.Argument(..., help="Registered name or a dataset directory."),
    split: str = typer.Option("test", "--split", "-s", help="Split whose qrels to check."),
) -> None:
    """Load a dataset strictly and report problems (bad lines and duplicates are errors)."""
    ds = load_dataset(dataset, split)
    p = ds.protocol()
    console.print(f"{ds.name}/{ds.split}: {p['n_docs']:,} docs, {p['n_queries']:,} judged queries, "
                  f"{p['n_judgements']:,} judgements")
    for k, v in ds.sources.items():
        console.print(f"  {k}: {v}")
    for line in ds.report.lines():
        console.print(f"[yellow]warning:[/] {line}")
    if ds.report.ok:
        console.print("[green]ok[/]: every judged query and document is present")
