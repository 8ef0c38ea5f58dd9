"""``rkd retrieve``: first-stage runs (BM25, exact dense, a fusion of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from retrieval_kd.cli.options import model_options
from retrieval_kd.errors import RkdError
from retrieval_kd.progress import console
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.retrieve.dense import DenseParams
from retrieval_kd.retrieve.fusion import METHODS, NORMS, FusionParams

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
@model_options(DenseParams, given="encoder", panels={"batch_size": "Encoder"})
def dense(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered name or directory."),
    model: str = typer.Option("minilm-l6", "--model", "-m", help="Short name, HF id or path."),
    split: str = typer.Option("test", "--split", "-s"),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/<ds>-<split>/<model>)."),
    k: int = typer.Option(1000, help="Documents kept per query."),
    *,
    encoder: dict[str, Any],
    backend: str = typer.Option("auto", rich_help_panel="Encoder", help=(
        "Inference backend: auto | torch | onnx | openvino (auto: openvino bf16 on a CPU with native bf16, "
        "else torch).")),
    variant: str = typer.Option("auto", rich_help_panel="Encoder",
                                help="fp32 | bf16 (openvino) | O1 | O2 | O3 | int8 (onnx)."),
    embedding_cache: Path = typer.Option(None, help="Folder of cached document vectors (shared with index "
                                                    "builds and teachers): documents there are not encoded "
                                                    "again."),
) -> None:
    """Exact dense retrieval (FAISS flat, inner product over normalised embeddings)."""
    from pydantic import ValidationError

    from retrieval_kd.models.backends import check, resolve_auto
    from retrieval_kd.retrieve.stage import dense_stage

    backend, variant = resolve_auto(backend, variant)
    check(backend, variant)
    try:
        params = DenseParams(**encoder, backend=backend, variant=variant)
    except ValidationError as e:
        raise RkdError("; ".join(f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: "
                                 f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())) from None
    out = out or _default_out(dataset, split, model)
    dense_stage(dataset, split, out, model, params, k=k, embedding_cache=embedding_cache)
    console.print(f"run written to {out}")


@app.command("fuse")
def fuse(
    runs: list[Path] = typer.Argument(..., help="Run directories (or run files) of one split, two or more."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    method: str = typer.Option("rrf", help="ranx method: " + ", ".join(METHODS) + "."),
    norm: str = typer.Option("min-max", help="ranx normalisation: " + ", ".join(NORMS) + ", or 'none'."),
    weights: str = typer.Option(None, help="Comma-separated, one per run (weighted methods), e.g. 0.7,0.3."),
    param: list[str] = typer.Option([], "--param", help="The method's own parameter NAME=VALUE, e.g. "
                                                         "k=60 for rrf; repeatable."),
    k: int = typer.Option(100, help="Documents kept per query."),
    name: str = typer.Option("fusion", help="The run's name (TREC tag, eval tables)."),
) -> None:
    """Fuse first-stage runs of the same split with ranx (reciprocal rank fusion by default)."""
    from pydantic import ValidationError

    from retrieval_kd.retrieve.stage import fusion_stage

    try:
        params = FusionParams(
            method=method, norm=None if norm == "none" else norm,
            weights=[float(w) for w in weights.split(",")] if weights else None,
            params=dict(_name_value(p) for p in param))
    except ValidationError as e:
        raise RkdError("; ".join(_option(err["loc"]) + err["msg"].removeprefix("Value error, ")
                                 for err in e.errors())) from None
    except ValueError as e:
        raise RkdError(f"--weights {weights}: {e}") from None
    fusion_stage(runs, out, params, k=k, name=name)
    console.print(f"run written to {out}")


def _option(loc: tuple) -> str:
    """The option a FusionParams error location stands for, as a message prefix."""
    if not loc:
        return ""
    return f"--param {loc[1]}: " if loc[0] == "params" and len(loc) > 1 else f"--{loc[0]}: "


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise RkdError(f"--param {text}: expected NAME=VALUE")
    return name, value
