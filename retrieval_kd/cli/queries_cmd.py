"""``rkd queries``: training queries generated from corpus passages by an LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retrieval_kd.errors import RkdError
from retrieval_kd.progress import console

app = typer.Typer(no_args_is_help=True, help="Generated training queries (doc2query / InPars style).")
Opt = typer.Option


@app.command("generate")
def generate(
    dataset: Annotated[str, Opt("--dataset", "-d", help="Source dataset: registered name or folder.")],
    out: Annotated[Path, Opt("--out", "-o", help="The BEIR folder to write (must not exist).")],
    split: Annotated[str, Opt("--split", "-s", help="Split name of the generated qrels.")] = "train",
    model: Annotated[str | None, Opt("--model", "-m", help="Registered causal-lm (rkd models list) or a "
                                     "GGUF file; with --base-url the served model's name.")] = None,
    base_url: Annotated[str | None, Opt(help="OpenAI-compatible server (e.g. http://127.0.0.1:8000) "
                                        "instead of a local model.")] = None,
    share: Annotated[float | None, Opt(help="Share of the corpus to write queries for (0-1].")] = None,
    count: Annotated[int | None, Opt(help="Number of passages to write queries for.")] = None,
    seed: Annotated[int, Opt(help="Seeds the passage sample (and sampled decoding).")] = 42,
    template: Annotated[str | None, Opt(help="Prompt template with {passage} (or {title}, {text}).")] = None,
    template_file: Annotated[Path | None, Opt(help="Read the template from this file.")] = None,
    chat: Annotated[bool | None, Opt("--chat/--no-chat", help="Prompt as a chat turn (default: when the "
                                     "model has a chat template; a server: chat).")] = None,
    max_new_tokens: Annotated[int, Opt(help="Tokens to generate per query.")] = 32,
    temperature: Annotated[float, Opt(help="0: greedy; above: sampled, one seed per passage.")] = 0.0,
    top_p: Annotated[float, Opt(help="Nucleus sampling (with --temperature > 0).")] = 0.95,
    max_passage_chars: Annotated[int, Opt(help="Cut the passage to this many characters.")] = 1200,
    min_words: Annotated[int, Opt(help="Reject queries shorter than this.")] = 3,
    max_words: Annotated[int, Opt(help="Reject queries longer than this.")] = 32,
    chunk_size: Annotated[int, Opt(help="Passages per resumable chunk.")] = 16,
    threads: Annotated[int | None, Opt(help="llama.cpp threads (default: its own choice).")] = None,
    concurrency: Annotated[int, Opt(help="Requests in flight to a server.")] = 4,
    n_ctx: Annotated[int, Opt(help="llama.cpp context length (prompt + query).")] = 2048,
) -> None:
    """Write OUT: the source corpus, one generated query per sampled passage (ids gq-<docid>)
    and qrels pointing each query at its passage, with a manifest. A killed run resumes from its
    work folder (.OUT.work) when rerun with the same settings."""
    from pydantic import ValidationError

    from retrieval_kd.queries.generate import generate_queries
    from retrieval_kd.queries.params import QueryGenParams

    if template and template_file:
        raise RkdError("give --template or --template-file, not both")
    if template_file:
        try:
            template = template_file.read_text(encoding="utf-8")
        except OSError as e:
            raise RkdError(f"{template_file}: cannot read the template ({e.strerror})") from None
    data = {"model": model, "base_url": base_url, "share": share, "count": count, "seed": seed,
            "chat": chat, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
            "max_passage_chars": max_passage_chars, "min_words": min_words, "max_words": max_words,
            "split": split, "chunk_size": chunk_size, "threads": threads, "concurrency": concurrency,
            "n_ctx": n_ctx}
    if template is not None:
        data["template"] = template
    try:
        params = QueryGenParams(**data)
    except ValidationError as e:
        raise RkdError("; ".join(f"{'--' + '-'.join(str(x) for x in err['loc']).replace('_', '-') + ': ' if err['loc'] else ''}"
                                 f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())) from None
    if out.exists():
        raise RkdError(f"{out} exists: remove it or choose another --out")
    try:
        man = generate_queries(dataset, out, params, echo=console.print)
    except KeyboardInterrupt:
        console.print(f"interrupted: the finished chunks are kept in {out.parent / ('.' + out.name + '.work')}; "
                      "rerun the same command to resume")
        raise
    o = man["outputs"]
    rej = ", ".join(f"{k} {v}" for k, v in o["rejected"].items() if v) or "none"
    qps = man["throughput"]["queries_per_s"]
    console.print(f"{out}: {o['kept']} queries for {o['passages']} passages (rejected: {rej}); "
                  f"split '{o['split']}', {qps} generations/s")


@app.command("filter")
def filter_cmd(
    dataset: Annotated[Path, Opt("--dataset", "-d", help="A generated dataset folder (rkd queries generate).")],
    run: Annotated[Path, Opt("--run", "-r", help="The teacher's ranking of its candidates: a TREC run "
                             "(or a folder holding run.trec), e.g. what rkd score wrote.")],
    out: Annotated[Path, Opt("--out", "-o", help="The filtered BEIR folder to write (must not exist).")],
    split: Annotated[str, Opt("--split", "-s", help="The generated split.")] = "train",
    top_k: Annotated[int, Opt(help="Keep a query whose passage the run ranks within this many.")] = 3,
) -> None:
    """Keep the generated queries whose source passage the teacher ranks within --top-k."""
    from retrieval_kd.queries.filter import filter_queries

    if out.exists():
        raise RkdError(f"{out} exists: remove it or choose another --out")
    man = filter_queries(dataset, split, run, top_k, out)
    o = man["outputs"]
    drop = ", ".join(f"{k} {v}" for k, v in o["dropped"].items() if v) or "none"
    console.print(f"{out}: kept {o['kept']} of {o['queries']} queries (dropped: {drop}); "
                  f"mean source rank {o['mean_source_rank']}")
