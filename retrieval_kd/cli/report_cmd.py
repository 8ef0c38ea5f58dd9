"""``rkd report``: a run's record as Markdown and HTML, with figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrieval_kd.progress import console


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run root written by 'rkd run' (holds run.json).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder (default RUN_DIR/report).")]
    = None,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="First recompute every metric from the run files with evaluate_run "
                                   "and fail on any difference.")] = False,
) -> None:
    """Render RUN_DIR's record: systems (metrics, significance vs the baseline, latency),
    stage wall times and throughput, quality-vs-latency and training-loss plots."""
    from retrieval_kd.report.render import write_report

    paths = write_report(run_dir, out, check=check)
    console.print(f"report written to {paths['markdown']} and {paths['html']}")
    typer.echo(paths["markdown"].read_text(encoding="utf-8"))
