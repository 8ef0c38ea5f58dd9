"""``rkd run``: a pipeline file as cached, resumable stages (then its report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrieval_kd.progress import console


def _plan_table(rows: list[dict]) -> str:
    head = ("stage", "kind", "key", "status", "inputs")
    body = [(r["id"], r["kind"], r["key"], r["status"] + (f" ({r['why']})" if r["why"] else ""),
             ", ".join(r["inputs"].values()) or "-") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head) - 1)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*r) for r in [head, *body])


def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline file (YAML), e.g. pipelines/scifact.yaml.")],
    root: Annotated[Path | None, typer.Option(
        "--root", "-r", help="Run root (default: the file's 'root', else runs/<pipeline name>).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "-n", help="Validate and print the plan: each stage, its key, cached or not.")] = False,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run just these stages and what they need: an id (teacher:ens@train, "
                       "student:kd#s42), an entry (teacher:ens, student:kd: all its splits and seeds) "
                       "or a section (retrieve:); repeatable.")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report",
                                         help="Write RUN_ROOT/report at the end.")] = True,
) -> None:
    """Run a pipeline: stages in dependency order, each cached under a key of its config and
    its inputs; a finished stage is never rerun, an interrupted run resumes."""
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.plan import plan, select
    from retrieval_kd.pipeline.runner import default_root, describe_plan, run_stages

    lp = load_pipeline(pipeline)
    root = root or default_root(lp)
    if dry_run:
        stages = plan(lp)
        if only:
            stages = select(stages, only)
        rows = describe_plan(stages, root)
        typer.echo(f"pipeline {lp.pipeline.name}: {len(rows)} stages, run root {root}")
        typer.echo(_plan_table(rows))
        n = sum(r["status"] == "cached" for r in rows)
        typer.echo(f"{n} cached, {len(rows) - n} to run")
        return
    record = run_stages(lp, root, only=only or None, echo=console.print)
    tot = record["totals"]
    console.print(f"{record['status']}: {tot['ran']} ran, {tot['cached']} cached in {tot['wall_s']:.1f}s; "
                  f"record {root / 'run.json'}")
    if report and any(e["kind"] == "eval" and e["status"] in ("ran", "cached") for e in record["stages"]):
        from retrieval_kd.report.render import write_report

        paths = write_report(root)
        console.print(f"report written to {paths['markdown']} and {paths['html']}")
    elif report and (root / "report").is_dir():
        console.print(f"report not rewritten (no eval stage in this run): {root / 'report'} is from an "
                      "earlier run; `rkd run` without --only (or with --only eval:) refreshes it")


def register(app: typer.Typer) -> None:
    """Add ``rkd run`` and ``rkd report`` to the command line."""
    from retrieval_kd.cli.report_cmd import report as report_command

    app.command("run")(run)
    app.command("report")(report_command)
