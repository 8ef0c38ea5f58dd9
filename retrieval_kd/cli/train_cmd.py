"""``rkd train``: a student from stored teacher scores (or the label-only baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrieval_kd.errors import RkdError
from retrieval_kd.families import FAMILIES
from retrieval_kd.progress import console


def parse_window(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        lo, hi = (int(x) for x in text.replace("-", ":").split(":"))
    except ValueError:
        raise RkdError(f"--rank-window must look like LOW:HIGH (e.g. 3:50), got '{text}'") from None
    return lo, hi


def parse_folds(text: str | None) -> tuple[int, int] | None:
    """``J/K`` -> (j, k) (the config checks the range)."""
    if not text:
        return None
    try:
        j, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise RkdError(f"--query-folds must look like J/K (e.g. 0/4: leave out fold 0 of 4), "
                       f"got '{text}'") from None
    return j, k


Opt = typer.Option


def train(
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config; flags override it.")] = None,
    family: Annotated[str | None, Opt("--family", "-f",
                                      help=" | ".join(FAMILIES))] = None,
    init: Annotated[str | None, Opt("--init", "-m", help="Initial model: short name, HF id or path.")] = None,
    scores: Annotated[list[Path] | None, Opt("--scores", help="Score store (repeat to join stores).")] = None,
    dataset: Annotated[str | None, Opt("--dataset", "-d", help="Default: the store's dataset.")] = None,
    split: Annotated[str | None, Opt("--split", "-s", help="Default: the store's split.")] = None,
    loss: Annotated[str | None, Opt("--loss", "-l", help="margin-mse | kl | infonce | embed, or a weighted "
                                    "sum like kl+infonce:0.5")] = None,
    embed_teacher: Annotated[str | None, Opt(help="Bi-encoder (short name, HF id or path) whose vectors "
                                             "the embed loss trains towards (YAML: a teacher spec).")] = None,
    embed_on: Annotated[str | None, Opt(help="rows | corpus: the embed loss on the training rows' texts, "
                                        "or alone on every corpus document (no labels).")] = None,
    label_only: Annotated[bool | None, Opt("--label-only/--teacher", help="Label-only baseline: InfoNCE "
                                           "on qrels, negatives from the candidate ranks.")] = None,
    candidates: Annotated[Path | None, Opt(help="Run (folder or TREC file) for --label-only "
                                           "without a store.")] = None,
    query_folds: Annotated[str | None, Opt(help="J/K: train only on the queries outside fold J of K "
                                           "(crc32(qid) % K), for cross-fitting.")] = None,
    temperature: Annotated[float | None, Opt(help="KL temperature.")] = None,
    kl_passages: Annotated[int | None, Opt(help="Passages per KL row (positive + negatives).")] = None,
    teacher_scale: Annotated[float | None, Opt(help="Multiply teacher scores by this in the labels "
                                               "(e.g. 0.05 for a cosine student).")] = None,
    negatives: Annotated[int | None, Opt(help="Hard negatives per positive.")] = None,
    rank_window: Annotated[str | None, Opt(help="Candidate ranks negatives come from, LOW:HIGH.")] = None,
    filter_margin: Annotated[float | None, Opt(help="Drop negatives scoring >= positive - margin.")] = None,
    no_filter: Annotated[bool, Opt("--no-filter", help="Keep every negative in the window.")] = False,
    short_lists: Annotated[str | None, Opt(help="drop | repeat: a positive left with too few "
                                           "negatives is skipped, or its row filled by drawing again.")] = None,
    positive_floor: Annotated[float | None, Opt(help="Label correction: raise a qrels positive to at least "
                                                "its row's best negative + this in the labels.")] = None,
    positives: Annotated[str | None, Opt(help="qrels-then-teacher | qrels | teacher")] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    epochs: Annotated[float | None, Opt()] = None,
    max_steps: Annotated[int | None, Opt(help="> 0 overrides --epochs.")] = None,
    lr: Annotated[float | None, Opt()] = None,
    warmup: Annotated[float | None, Opt(help="Fraction of steps (< 1) or steps.")] = None,
    seed: Annotated[int | None, Opt()] = None,
    max_length: Annotated[int | None, Opt(help="Passage (cross-encoder: pair) tokens.")] = None,
    query_max_length: Annotated[int | None, Opt(help="ColBERT query tokens.")] = None,
    splade_query_weight: Annotated[float | None, Opt(help="SPLADE FLOPS weight, queries.")] = None,
    splade_doc_weight: Annotated[float | None, Opt(help="SPLADE FLOPS weight, documents.")] = None,
    save_steps: Annotated[int | None, Opt(help="Checkpoint every N steps.")] = None,
    output: Annotated[Path | None, Opt("--output", "-o", help="Model folder to write.")] = None,
    restart: Annotated[bool, Opt("--restart", help="Discard an earlier run's checkpoints.")] = False,
    dump_examples: Annotated[Path | None, Opt(help="Only write the training rows (JSON lines).")] = None,
) -> None:
    """Train a student on a score store's teacher scores; resumes a killed run from its checkpoint."""
    from retrieval_kd.train.config import load_config

    cfg = load_config(
        config, family=family, init=init, scores=scores or None, dataset=dataset, split=split,
        losses=loss or ("infonce" if label_only else None),
        teacher=None if label_only is None else ("none" if label_only else "store"),
        candidates=candidates, query_folds=parse_folds(query_folds), temperature=temperature,
        kl_passages=kl_passages, negatives=negatives,
        teacher_scale=teacher_scale,
        rank_window=parse_window(rank_window), filter_margin=filter_margin, positives=positives,
        short_lists=short_lists, positive_floor=positive_floor,
        batch_size=batch_size, epochs=epochs, max_steps=max_steps, lr=lr, warmup=warmup, seed=seed,
        max_length=max_length, query_max_length=query_max_length,
        splade_query_weight=splade_query_weight, splade_doc_weight=splade_doc_weight,
        save_steps=save_steps, output=output, embed_on=embed_on,
        embed_teacher={"kind": "bi-encoder", "model": embed_teacher} if embed_teacher else None,
    )
    if no_filter:
        cfg = cfg.model_copy(update={"filter_margin": None})
    if dump_examples:
        from retrieval_kd.train.stage import dump_examples as dump

        stats = dump(cfg, dump_examples)
        console.print(f"wrote {stats.rows:,} {stats.layout} rows ({stats.queries:,} queries, "
                      f"{stats.filtered_by_teacher:,} negatives dropped by the teacher filter) "
                      f"to {dump_examples}")
        return
    from retrieval_kd.train.stage import describe, train_stage

    if cfg.output is None:
        raise RkdError("give --output (or output: in the config)")
    out = train_stage(cfg, restart=restart)
    console.print(describe(out), highlight=False)
    typer.echo(str(out))
