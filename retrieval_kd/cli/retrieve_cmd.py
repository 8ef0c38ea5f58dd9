"""``rkd retrieve``: first-stage runs (BM25, exact dense)."""

from __future__ import annotations

from pathlib import Path

import typer

from retrieval_kd.progress import console
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.retrieve.dense import DenseParams

app = typer.Typer(no_args_is_help=True, help="First-stage retrieval into TREC run directories.")


def _default_out(dataset: str, split: str, name: str) -> Path:
    return Path("runs") / f"{Path(dataset).name}-{split}" / name.replace("/", "_")


@app.command("bm25")
def bm25(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered name or directory."),
    split: str = typer.Option("test", "--split", "-s"),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/<ds>-<split>/bm25)."),
    k: int = typer.Option(1000, help="Documents kept per query."),
    k1: float = typer.Option(0.9), b: float = typer.Option(0.4),
    method: str = typer.Option("lucene", help="lucene | robertson | atire | bm25l | bm25+"),
    stemmer: str = typer.Option("english", help="PyStemmer language, or 'none'."),
    stopwords: str = typer.Option("en", help="Stopword list, or 'none'."),
    backend: str = typer.Option("bm25s", help="bm25s (embedded) | pyserini (needs the extra)."),
) -> None:
    """BM25 top-k for each query of a split."""
    from retrieval_kd.retrieve.stage import bm25_stage

    params = BM25Params(k1=k1, b=b, method=method, backend=backend,
                        stemmer=None if stemmer == "none" else stemmer,
                        stopwords=None if stopwords == "none" else stopwords)
    out = out or _default_out(dataset, split, "bm25")
    bm25_stage(dataset, split, out, params, k=k)
    console.print(f"run written to {out}")


@app.command("dense")
def dense(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered name or directory."),
    model: str = typer.Option("minilm-l6", "--model", "-m", help="Short name, HF id or path."),
    split: str = typer.Option("test", "--split", "-s"),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/<ds>-<split>/<model>)."),
    k: int = typer.Option(1000, help="Documents kept per query."),
    batch_size: int = typer.Option(64),
    max_seq_length: int = typer.Option(None, help="Override the model's maximum length."),
    query_prompt: str = typer.Option("", help="Text prepended to each query."),
    doc_prompt: str = typer.Option("", help="Text prepended to each document."),
) -> None:
    """Exact dense retrieval (FAISS flat, inner product over normalised embeddings)."""
    from retrieval_kd.retrieve.stage import dense_stage

    params = DenseParams(batch_size=batch_size, max_seq_length=max_seq_length,
                         query_prompt=query_prompt, doc_prompt=doc_prompt)
    out = out or _default_out(dataset, split, model)
    dense_stage(dataset, split, out, model, params, k=k)
    console.print(f"run written to {out}")
