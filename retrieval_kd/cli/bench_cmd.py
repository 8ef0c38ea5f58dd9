"""``rkd bench``: a model, BM25, or a first stage + reranker over every dataset of a suite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from retrieval_kd.progress import console


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "system"


def bench(
    suite: Annotated[str, typer.Argument(help="Suite: beir, msmarco, xling, miracl, mr-tydi "
                                              "(retrieval_kd/bench/suites.yaml).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help=(
        "Model to benchmark: registered name (rkd models list), HF id or path.")) ] = None,
    index: Annotated[str | None, typer.Option(help=(
        "flat | hnsw | ivfpq: search the model through an index of that kind (default: exact dense "
        "retrieval for a bi-encoder, the family's index otherwise).")) ] = None,
    family: Annotated[str | None, typer.Option(help=(
        "bi-encoder | splade | colbert, for a model that is not registered (default bi-encoder).")) ] = None,
    reranker: Annotated[str | None, typer.Option(help="Cross-encoder reranking the first stage's top --depth.")] = None,
    first_stage: Annotated[str | None, typer.Option("--first-stage", help=(
        "bm25 | model (default: the model when --model is given, else bm25; bm25 alone benchmarks BM25).")) ] = None,
    depth: Annotated[int, typer.Option(min=1, help="Candidates the reranker scores per query.")] = 100,
    k: Annotated[int, typer.Option(min=1, help="Documents the first stage keeps per query.")] = 1000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help=(
        "Folder of the cached stages (one per dataset, model and settings) and the table "
        "(default runs/bench/<suite>).")) ] = None,
    table: Annotated[Path | None, typer.Option(help=(
        "Write the table as TABLE.md and TABLE.json (default <out>/<system>.md/.json).")) ] = None,
    tokenizer: Annotated[str | None, typer.Option(help=(
        "XOR-TyDi R@kt tokens: nltk (the official, needs nltk) | whitespace (default: nltk when installed).")) ] = None,
) -> None:
    """Benchmark over a suite's locally available datasets: per dataset the metric its papers
    report, the suite average and the published numbers beside ours; datasets without a local
    copy are listed with where they were looked for and their download sources."""
    from pydantic import ValidationError

    from retrieval_kd.artifacts import write_benchmark
    from retrieval_kd.bench.run import default_out, markdown, run_suite
    from retrieval_kd.bench.suites import get_suite
    from retrieval_kd.bench.system import BenchSystem
    from retrieval_kd.errors import RkdError

    if tokenizer not in (None, "nltk", "whitespace"):
        raise RkdError(f"--tokenizer {tokenizer}: nltk or whitespace")
    spec = get_suite(suite)
    try:
        system = BenchSystem(model=model, index=index, family=family, reranker=reranker,
                             first_stage=first_stage, depth=depth, k=k)
    except ValidationError as e:
        raise RkdError("; ".join((f"--{str(err['loc'][0]).replace('_', '-')}: " if err["loc"] else "")
                                 + err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
    out = out or default_out(suite)
    result = run_suite(spec, system, out, echo=console.print, tokenizer=tokenizer)
    name = _slug(f"{model or 'bm25'}" + (f"-{index}" if index else "") + (f"-rerank-{reranker}" if reranker else ""))
    dest = table or out / f"bench-{suite}-{name}"
    text = write_benchmark(Path(str(dest).removesuffix(".md").removesuffix(".json")), result, markdown,
                           note=f"rkd bench {suite}")
    typer.echo(text)
    console.print(f"table written to {dest.with_suffix('.md')} and {dest.with_suffix('.json')}")
