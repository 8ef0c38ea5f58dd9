"""``rkd index dense|splade|colbert`` (build) and ``rkd search`` (query an index into a run)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from retrieval_kd.cli.options import model_options, option_group
from retrieval_kd.families import BI_ENCODER, COLBERT, SPLADE
from retrieval_kd.index.encoders import ColbertParams, SpladeParams
from retrieval_kd.index.faiss_index import FaissParams
from retrieval_kd.progress import console
from retrieval_kd.retrieve.dense import DenseParams

app = typer.Typer(no_args_is_help=True, help="Build dense (FAISS), SPLADE (inverted) and ColBERT indexes.")

Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Registered name or directory (its corpus is indexed).")]
Split = Annotated[str, typer.Option("--split", "-s", help="Split loaded with the corpus (only the corpus is used).")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Index directory (default indexes/<ds>-<model>-<kind>).")]
Chunk = Annotated[int, typer.Option(help="Documents per resumable encoding chunk.")]
Keep = Annotated[bool, typer.Option(help="Move the encoded chunks into the index as embeddings/.")]
WorkDir = Annotated[Path | None, typer.Option(help="Encoded-chunk folder (default .<out>.work beside the index); "
                                                   "a killed build resumes from it.")]
KeepWork = Annotated[bool, typer.Option(help="Keep the work folder, so other index variants built with the "
                                             "same --work-dir reuse the encodings.")]
EmbCache = Annotated[Path | None, typer.Option(help="Folder of cached document vectors, shared by builds, "
                                                    "runs and teachers of the same model and settings: "
                                                    "documents already there are not encoded again.")]
BUILD_OPTIONS = {"chunk_size": (Chunk, 8192), "keep_embeddings": (Keep, False), "work_dir": (WorkDir, None),
                 "keep_work": (KeepWork, False), "embedding_cache": (EmbCache, None)}
"""The build options of every ``rkd index`` command (ColBERT's without embedding_cache), passed on to
``build_index``."""
FAISS_PANEL, ENCODER_PANEL = "FAISS index", "Encoder"
FOpt = functools.partial(typer.Option, rich_help_panel=FAISS_PANEL)
EOpt = functools.partial(typer.Option, rich_help_panel="Search engine")
FaissDevice = Annotated[str, FOpt(help="auto (GPU when faiss-gpu sees one) | cpu | gpu.")]
BackendOpt = Annotated[str, typer.Option(rich_help_panel=ENCODER_PANEL, help=(
    "Inference backend: auto | torch | onnx | openvino (onnx/openvino: the model's transformer exported once, "
    "cached under $RKD_CACHE). auto: openvino bf16 on a CPU with native bf16, else torch."))]
VariantOpt = Annotated[str, typer.Option(rich_help_panel=ENCODER_PANEL, help=(
    "fp32 | bf16 (openvino) | O1 | O2 | O3 | int8 (onnx; this CPU's config, or int8-avx2, int8-avx512, "
    "int8-avx512_vnni, int8-arm64)."))]
Opt = typer.Option
MaybeInt = int | None


def _default_out(dataset: str, model: str, suffix: str) -> Path:
    return Path("indexes") / f"{Path(dataset).name}-{Path(model).name}-{suffix}".replace("/", "_")


def _build(kind: str, dataset: str, model: str, split: str, out: Path | None, suffix: str,
           **params: Any) -> None:
    """Build the ``kind`` index (default folder: indexes/<ds>-<model>-<suffix>) and say where it went."""
    from retrieval_kd.index.build import build_index

    out = out or _default_out(dataset, model, suffix)
    build_index(kind, dataset, out, model, split=split, **params)
    console.print(f"index written to {out}")


def _backend(backend: str, variant: str) -> dict[str, str]:
    """``backend`` / ``variant`` encoder params (checked first: one clear line for a bad pair)."""
    from retrieval_kd.models.backends import check, resolve_auto

    backend, variant = resolve_auto(backend, variant)
    check(backend, variant)
    return {"backend": backend, "variant": variant}


def _params(cls, values: dict, what: str):
    """``cls(**values)``, a validation failure as one ``IndexParamError`` line naming each field."""
    from pydantic import ValidationError

    from retrieval_kd.index.faiss_index import IndexParamError

    try:
        return cls(**values)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc'])) or cls.__name__}: "
                         f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise IndexParamError(f"invalid {what} parameters: {msgs}") from None


def _faiss(index, hnsw_m, ef_construction, ef_search, nlist, pq_m, pq_nbits, nprobe, train_size,
           deterministic, device, **extra):
    from retrieval_kd.index.faiss_index import FaissParams

    return _params(FaissParams, dict(index=index, hnsw_m=hnsw_m, ef_construction=ef_construction,
                                     ef_search=ef_search, nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits, nprobe=nprobe,
                                     train_size=train_size, deterministic=deterministic, device=device, **extra),
                   "index")


def _plaid(engine, nprobe, k_token, nfull, centroid_score_threshold):
    """The plaid engine's search defaults from the options given (None for the exact engine)."""
    from retrieval_kd.index.faiss_index import IndexParamError
    from retrieval_kd.index.plaid import PlaidParams

    given = {"k_token": k_token, "nfull": nfull, "centroid_score_threshold": centroid_score_threshold}
    if engine != "plaid":
        if any(v is not None for v in given.values()):
            raise IndexParamError("--k-token, --nfull and --centroid-score-threshold set the plaid engine's "
                                  "defaults: add --engine plaid")
        return None
    return _params(PlaidParams, {key: v for key, v in {**given, "nprobe": nprobe}.items() if v is not None}, "plaid")


# What the commands do not derive from the params models (retrieval_kd/cli/options.py): short
# flags, the FAISS device (--faiss-device: the encoder has its own --device), the backend pair
# (resolved from auto and checked first), SPLADE's batch size (its command's own default) and
# ColBERT's FAISS options (their defaults follow --engine).
FAISS_FIELDS = {"skip": ("device",), "panels": {"index": FAISS_PANEL}, "given": "faiss"}
ENCODER = {"given": "encoder", "panels": {"batch_size": ENCODER_PANEL}}
Model = Annotated[str, Opt("--model", "-m", help="SentenceTransformer: short name, HF id or path.")]


@app.command(BI_ENCODER.index_name)
@model_options(FaissParams, **FAISS_FIELDS)
@model_options(DenseParams, skip=("title_sep",), **ENCODER)
@option_group("build", BUILD_OPTIONS)
def dense(
    dataset: Dataset,
    model: Model = "minilm-l6",
    split: Split = "test",
    out: Out = None,
    *,
    faiss: dict[str, Any],
    encoder: dict[str, Any],
    faiss_device: FaissDevice = "auto",
    backend: BackendOpt = "auto",
    variant: VariantOpt = "auto",
    build: dict[str, Any],
) -> None:
    """Dense index: FAISS flat (exact), HNSW or IVF-PQ over inner product of normalised embeddings."""
    enc = _params(DenseParams, {**encoder, **_backend(backend, variant)}, "encoder")
    fp = _params(FaissParams, {**faiss, "device": faiss_device}, "index")
    _build(BI_ENCODER.index_name, dataset, model, split, out, fp.index, encoder_params=enc, faiss_params=fp,
           **build)


@app.command(SPLADE.index_name)
@model_options(SpladeParams, **ENCODER)
@option_group("build", BUILD_OPTIONS)
def splade(
    dataset: Dataset,
    model: Annotated[str, Opt("--model", "-m", help="SparseEncoder: short name, HF id or path.")] = "splade-tiny",
    split: Split = "test",
    out: Out = None,
    *,
    encoder: dict[str, Any],
    batch_size: Annotated[int, Opt(help="Texts per encoder batch.", rich_help_panel=ENCODER_PANEL)] = 32,
    backend: BackendOpt = "auto",
    variant: VariantOpt = "auto",
    build: dict[str, Any],
) -> None:
    """SPLADE inverted index (posting lists over the vocabulary; sparse dot-product search)."""
    enc = _params(SpladeParams, {**encoder, "batch_size": batch_size, **_backend(backend, variant)}, "encoder")
    _build(SPLADE.index_name, dataset, model, split, out, SPLADE.index_name, encoder_params=enc, **build)


@app.command(COLBERT.index_name)
@model_options(ColbertParams, **ENCODER)
@option_group("build", BUILD_OPTIONS, skip=("embedding_cache",))
def colbert(
    dataset: Dataset,
    model: Annotated[str, Opt("--model", "-m", help="MultiVectorEncoder / ColBERT folder, or any HF/ST "
                                                   "folder (its token outputs).")],
    split: Split = "test",
    out: Out = None,
    *,
    encoder: dict[str, Any],
    backend: BackendOpt = "auto",
    variant: VariantOpt = "auto",
    cand_index: Annotated[str, FOpt(help="FAISS index over token vectors: flat | hnsw | ivfpq.")] = "ivfpq",
    hnsw_m: Annotated[int, FOpt()] = 32,
    ef_construction: Annotated[int, FOpt()] = 200,
    ef_search: Annotated[int, FOpt()] = 64,
    nlist: Annotated[MaybeInt, FOpt(help="IVF-PQ lists (default 4*sqrt(tokens); plaid: 2*sqrt(tokens)).")] = None,
    pq_m: Annotated[MaybeInt, FOpt(help="IVF-PQ sub-quantizers (default dim/8; fast scan dim/4).")] = None,
    pq_nbits: Annotated[MaybeInt, FOpt(help="Bits per PQ code (default: exact 8, plaid 4).")] = None,
    fast_scan: Annotated[bool | None, FOpt(help="IVF-PQ fast-scan kernels, 4-bit codes (default: on for "
                                               "plaid with 4-bit codes).")] = None,
    nprobe: Annotated[MaybeInt, FOpt(help="Default lists probed per query token (exact: 16, plaid: 3).")] = None,
    train_size: Annotated[MaybeInt, FOpt()] = None,
    engine: Annotated[str, EOpt(help="Search engine recorded in the index: exact (MaxSim over every "
                                    "candidate) | plaid (centroid pruning, MaxSim on the best nfull; "
                                    "needs --cand-index ivfpq).")] = "exact",
    k_token: Annotated[MaybeInt, EOpt(help="plaid: default tokens kept per query token (192).")] = None,
    nfull: Annotated[MaybeInt, EOpt(help="plaid: default candidates scored exactly "
                                        "(max(32, sqrt(docs)/4)).")] = None,
    centroid_score_threshold: Annotated[float | None, EOpt(help="plaid: default centroid pruning "
                                                               "threshold (none).")] = None,
    deterministic: Annotated[bool, FOpt(help="HNSW: single-threaded, reproducible graph build.")] = True,
    faiss_device: FaissDevice = "auto",
    build: dict[str, Any],
) -> None:
    """ColBERT late-interaction index: float16 token vectors + FAISS token index; MaxSim at search."""
    enc = _params(ColbertParams, {**encoder, **_backend(backend, variant)}, "encoder")
    nbits = pq_nbits or (4 if engine == "plaid" else 8)
    fp = _faiss(cand_index, hnsw_m, ef_construction, ef_search, nlist, pq_m, nbits,
                nprobe if nprobe and engine == "exact" else 16, train_size, deterministic, faiss_device)
    if fast_scan or (fast_scan is None and engine == "plaid" and cand_index == "ivfpq" and nbits == 4):
        fp = _params(type(fp), fp.model_dump() | {"fast_scan": True}, "index")
    plaid = _plaid(engine, nprobe, k_token, nfull, centroid_score_threshold)
    _build(COLBERT.index_name, dataset, model, split, out, COLBERT.index_name, encoder_params=enc, faiss_params=fp,
           engine=engine, plaid_params=plaid, **build)


def search(
    index: Annotated[Path, typer.Argument(help="Index directory (from rkd index ...).")],
    dataset: Annotated[str, Opt("--dataset", "-d", help="Dataset whose corpus was indexed.")],
    split: Annotated[str, Opt("--split", "-s")] = "test",
    out: Annotated[Path | None, Opt("--out", "-o", help="Run directory (default runs/<ds>-<split>/<index>).")] = None,
    k: Annotated[int, Opt("--k", "-k", help="Documents kept per query.")] = 1000,
    ef_search: Annotated[MaybeInt, Opt(help="HNSW efSearch (default: the index's).")] = None,
    nprobe: Annotated[MaybeInt, Opt(help="IVF lists probed (default: the index's).")] = None,
    refine_factor: Annotated[MaybeInt, Opt(help="Refined IVF-PQ: candidates re-scored per result "
                                                "(default: the index's).")] = None,
    k_token: Annotated[MaybeInt, Opt(help="ColBERT: token neighbours per query token (default: exact 32, "
                                          "plaid the index's).")] = None,
    engine: Annotated[str | None, Opt(help="ColBERT: exact | plaid (default: the index's engine).")] = None,
    nfull: Annotated[MaybeInt, Opt(help="ColBERT plaid: candidates scored exactly (default: the index's).")] = None,
    centroid_score_threshold: Annotated[float | None, Opt(help="ColBERT plaid: centroids scoring below this "
                                                               "are not probed.")] = None,
    model: Annotated[str | None, Opt("--model", "-m", help="Override the encoder recorded in the index.")] = None,
    max_queries: Annotated[MaybeInt, Opt(help="Search only the first N queries.")] = None,
    threads: Annotated[int, Opt(help="Threads for the query-at-a-time search loop (0: library default).")] = 1,
) -> None:
    """Search an index with a split's queries: TREC run + manifest with latency, QPS, memory."""
    from retrieval_kd.index.search import search_stage

    out = out or Path("runs") / f"{Path(dataset).name}-{split}" / index.name
    search_stage(index, dataset, split, out, k=k, model=model, max_queries=max_queries, threads=threads or None,
                 overrides={"ef_search": ef_search, "nprobe": nprobe, "refine_factor": refine_factor,
                            "k_token": k_token, "engine": engine,
                            "nfull": nfull, "centroid_score_threshold": centroid_score_threshold})
    console.print(f"run written to {out}")
