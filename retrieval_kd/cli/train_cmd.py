"""``rkd train``: a student from stored teacher scores (or the label-only baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from retrieval_kd.cli.options import Flag, int_pair, model_options
from retrieval_kd.errors import RkdError
from retrieval_kd.families import BI_ENCODER
from retrieval_kd.progress import console
from retrieval_kd.train.config import TrainConfig, load_config


def parse_window(text: str | None) -> tuple[int, int] | None:
    return int_pair(text, "--rank-window must look like LOW:HIGH (e.g. 3:50)", seps=":-")


def parse_folds(text: str | None) -> tuple[int, int] | None:
    """``J/K`` -> (j, k) (the config checks the range)."""
    return int_pair(text, "--query-folds must look like J/K (e.g. 0/4: leave out fold 0 of 4)")


Opt = typer.Option

# What the command line does not derive from TrainConfig (retrieval_kd/cli/options.py): short flags,
# and the fields whose flags parse differently (they are the command's own parameters below).
FLAGS = {
    "family": Flag("-f"),
    "init": Flag("-m", help="Initial model: short name, HF id or path."),
    "output": Flag("-o", help="Model folder to write."),
    "dataset": Flag("-d", help="Default: the store's dataset."),
    "split": Flag("-s", help="Default: the store's split."),
    "scores": Flag(help="Score store (repeat to join stores)."),
    "candidates": Flag(help="Run (folder or TREC file) for --label-only without a store."),
    "translate": Flag(help="Translate-Distill: train on this dataset's queries (same ids, same split) "
                           "in place of the scored ones; repeat for several languages."),
    "filter_margin": Flag(help="Drop negatives scoring >= positive - margin (--no-filter: keep them all)."),
}
PANELS = {"scores": "Data", "losses": "Examples", "max_length": "Student", "batch_size": "Optimisation"}
"""The first field of each of TrainConfig's sections."""


@model_options(TrainConfig, flags=FLAGS, panels=PANELS, skip=("teacher",))
def train(
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config; flags override it.")] = None,
    *,
    given: dict[str, Any],
    query_folds: Annotated[str | None, Opt(help="J/K: train only on the queries outside fold J of K "
                                           "(crc32(qid) % K), for cross-fitting.")] = None,
    embed_teacher: Annotated[str | None, Opt(help="Bi-encoder (short name, HF id or path) whose vectors "
                                             "the embed loss trains towards (YAML: a teacher spec).")] = None,
    losses: Annotated[str | None, Opt("--loss", "-l", help="margin-mse | kl | infonce | embed, or a weighted "
                                      "sum like kl+infonce:0.5")] = None,
    rank_window: Annotated[str | None, Opt(help="Candidate ranks negatives come from, LOW:HIGH.")] = None,
    label_only: Annotated[bool | None, Opt("--label-only/--teacher", rich_help_panel="Data", help=(
        "Label-only baseline: InfoNCE on qrels, negatives from the candidate ranks (YAML: teacher: none)."))] = None,
    no_filter: Annotated[bool, Opt("--no-filter", help="Keep every negative in the window.",
                                   rich_help_panel="Examples")] = False,
    restart: Annotated[bool, Opt("--restart", help="Discard an earlier run's checkpoints.")] = False,
    dump_examples: Annotated[Path | None, Opt(help="Only write the training rows (JSON lines).")] = None,
) -> None:
    """Train a student on a score store's teacher scores; resumes a killed run from its checkpoint.

    Under torchrun / accelerate launch the processes train together (DDP; --batch-size is per
    process) and rank 0 writes the one model."""
    cfg = load_config(
        config, **given,
        losses=losses or ("infonce" if label_only else None),
        teacher=None if label_only is None else ("none" if label_only else "store"),
        query_folds=parse_folds(query_folds), rank_window=parse_window(rank_window),
        embed_teacher={"kind": BI_ENCODER.name, "model": embed_teacher} if embed_teacher else None,
    )
    if no_filter:
        cfg = cfg.model_copy(update={"filter_margin": None})
    from retrieval_kd.train.distributed import close, is_main_process

    if dump_examples:
        if not is_main_process():  # under a launcher rank 0 alone writes the file
            return
        from retrieval_kd.train.stage import dump_examples as dump

        stats = dump(cfg, dump_examples)
        console.print(f"wrote {stats.rows:,} {stats.layout} rows ({stats.queries:,} queries, "
                      f"{stats.filtered_by_teacher:,} negatives dropped by the teacher filter) "
                      f"to {dump_examples}")
        return
    from retrieval_kd.train.stage import describe, train_stage

    if cfg.output is None:
        raise RkdError("give --output (or output: in the config)")
    try:
        out = train_stage(cfg, restart=restart)
    finally:
        close()  # under torchrun / accelerate launch: leave the process group
    if not is_main_process():  # rank 0 reports for all
        return
    console.print(describe(out), highlight=False)
    typer.echo(str(out))
