"""``rkd score`` and ``rkd scores``: fill, inspect, check, merge, import and export score stores."""

from __future__ import annotations

from pathlib import Path

import typer

from retrieval_kd.cli.options import int_pair
from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.families import TEACHER_KINDS
from retrieval_kd.progress import console

app = typer.Typer(no_args_is_help=True, help="Teacher-score stores: show, verify, merge, import, export.")

KIND_HELP = " | ".join((*TEACHER_KINDS, "bm25", "llm", "ensemble"))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    shard = int_pair(text, "--shard must look like i/n (e.g. 0/4)")
    if shard and not 0 <= shard[0] < shard[1]:
        raise RkdError(f"--shard {text}: need 0 <= i < n")
    return shard


def parse_member(text: str) -> dict:
    """``KIND[:MODEL][@WEIGHT]``, e.g. ``bi-encoder:minilm-l6@0.5`` or ``bm25``."""
    body, _, weight = text.partition("@")
    kind, _, model = body.partition(":")
    teacher = {"kind": kind, **({"model": model} if model else {})}
    try:
        return {"teacher": teacher, "weight": float(weight) if weight else 1.0}
    except ValueError:
        raise RkdError(f"--member '{text}': weight '{weight}' is not a number") from None


def with_backend(data: dict, backend: str | None, variant: str | None) -> tuple[dict, int]:
    """``data`` (a teacher spec dict) with ``backend`` / ``variant`` set on every cross-encoder,
    bi-encoder and SPLADE teacher in it (ensemble and cross-fit members too); and how many."""
    kind = data.get("kind")
    if kind == "ensemble":
        members, n = [], 0
        for m in data.get("members", []):
            t, k = with_backend(m["teacher"], backend, variant)
            members.append({**m, "teacher": t})
            n += k
        return {**data, "members": members}, n
    if kind == "crossfit":
        folds = [with_backend(f, backend, variant) for f in data.get("folds", [])]
        return {**data, "folds": [f for f, _ in folds]}, sum(k for _, k in folds)
    if kind in TEACHER_KINDS:  # a family's model, on an inference backend
        opts = {"backend": backend, "variant": variant}
        return {**data, **{k: v for k, v in opts.items() if v is not None}}, 1
    return data, 0


def teacher_from_flags(teacher_file: Path | None, kind: str | None, model: str | None,
                       members: list[str], normalization: str, max_length: int | None,
                       dtype: str | None, template: str | None, base_url: str | None,
                       batch_size: int | None, backend: str | None = None, variant: str | None = None):
    from retrieval_kd.teachers.spec import parse_teacher

    spec = _teacher_from_flags(teacher_file, kind, model, members, normalization, max_length, dtype,
                               template, base_url, batch_size)
    if backend is None and variant is None:
        return spec
    if variant is not None and backend is None and variant != "fp32":
        backend = "onnx"  # a variant other than fp32 is an onnx one
    from retrieval_kd.models.backends import check

    check(backend or "torch", variant or "fp32", what="--backend/--variant")
    data, n = with_backend(spec.model_dump(), backend, variant)
    if n == 0 and (backend or "torch", variant or "fp32") != ("torch", "fp32"):
        raise RkdError(f"--backend {backend}: the {spec.kind} teacher has no model to run on it "
                       f"({', '.join(TEACHER_KINDS)} teachers have)")
    return parse_teacher(data, "command line")


def _teacher_from_flags(teacher_file: Path | None, kind: str | None, model: str | None,
                        members: list[str], normalization: str, max_length: int | None,
                        dtype: str | None, template: str | None, base_url: str | None,
                        batch_size: int | None):
    from retrieval_kd.teachers.spec import load_teacher_file, parse_teacher

    if teacher_file:
        return load_teacher_file(teacher_file)
    if not kind:
        raise RkdError(f"give --teacher-file or --teacher ({KIND_HELP})")
    data: dict = {"kind": kind}
    if kind == "ensemble":
        if not members:
            raise RkdError("an ensemble needs --member KIND[:MODEL][@WEIGHT] (repeat it)")
        data.update(members=[parse_member(m) for m in members], normalization=normalization)
    else:
        if model:
            data["model"] = model
        opts = {"max_length": max_length, "dtype": dtype, "template": template,
                "batch_size": batch_size}
        if base_url:
            data.update(backend="openai", base_url=base_url)
        data.update({k: v for k, v in opts.items() if v is not None})
    return parse_teacher(data, "command line")


def score(
    dataset: str = typer.Option(..., "--dataset", "-d"),
    split: str = typer.Option("test", "--split", "-s"),
    candidates: Path = typer.Option(..., "--candidates", "-c", help="Run directory or TREC file."),
    top_k: int = typer.Option(100, help="Candidates per query taken from the run."),
    positives: bool = typer.Option(False, "--positives/--no-positives",
                                   help="Force each query's qrels positives into its candidates."),
    teacher_file: Path = typer.Option(None, "--teacher-file", "-t", help="Teacher spec (YAML)."),
    teacher: str = typer.Option(None, "--teacher", help=KIND_HELP),
    model: str = typer.Option(None, "--model", "-m", help="Short name, HF id, path (or served model)."),
    member: list[str] = typer.Option([], "--member", help="Ensemble member KIND[:MODEL]\\[@WEIGHT]."),
    normalization: str = typer.Option("zscore", help="Ensemble per-query normalisation."),
    max_length: int = typer.Option(None), dtype: str = typer.Option(None),
    template: str = typer.Option(None, help="LLM prompt with {query} and {passage}."),
    base_url: str = typer.Option(None, help="OpenAI-compatible server (LLM teacher)."),
    batch_size: int = typer.Option(None),
    backend: str = typer.Option(None, help="Inference backend of the cross-encoder / bi-encoder / SPLADE "
                                           "teacher (ensemble members too): auto | torch | onnx | openvino; "
                                           "default: the spec's (auto: openvino bf16 on a CPU with "
                                           "native bf16, else torch)."),
    variant: str = typer.Option(None, help="onnx variant: fp32 | O1 | O2 | O3 | int8 (this CPU's int8 "
                                           "config, or int8-avx2 / int8-avx512 / int8-avx512_vnni / "
                                           "int8-arm64); the export is cached under $RKD_CACHE."),
    root: Path = typer.Option(Path("scores"), "--root", help="Where stores live."),
    shard: str = typer.Option(None, help="Score only shard i/n of the queries."),
    chunk_size: int = typer.Option(2000, help="Pairs per atomically written chunk."),
    embedding_cache: Path = typer.Option(None, help="Folder of cached passage vectors of bi-encoder / SPLADE "
                                                    "teachers (shared with index builds and runs of the same "
                                                    "model and settings)."),
    ray: str = typer.Option(None, "--ray", metavar="local|ADDRESS",
                            help="Score chunks on Ray workers (extra 'scale'): 'local' starts Ray on this "
                                 "machine; else a cluster address for ray.init ('auto', HOST:PORT, "
                                 "ray://HOST:10001). The same store as without it."),
    ray_workers: int = typer.Option(None, "--ray-workers", min=1,
                                    help="Ray workers, each loading the teacher once (default: this "
                                         "machine's cores with 'local', else the cluster's CPUs)."),
    ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0, help="GPUs each Ray worker takes."),
) -> None:
    """Score each query's candidates with a teacher into the (resumable) score store."""
    from retrieval_kd.scores.stage import score_stage

    spec = teacher_from_flags(teacher_file, teacher, model, member, normalization, max_length,
                              dtype, template, base_url, batch_size, backend, variant)
    if ray is None and (ray_workers is not None or ray_gpus):
        raise RkdError("--ray-workers / --ray-gpus need --ray local|ADDRESS")
    made: list = []
    factory = None
    if ray is not None:
        from retrieval_kd.scores.ray_scoring import RayTeacher, require_ray
        from retrieval_kd.teachers.spec import build_teacher

        require_ray()  # no Ray: one error now, before the dataset is read

        def factory():  # each worker builds the teacher from the spec; the driver only commits
            made.append(RayTeacher(lambda: build_teacher(spec, embedding_cache), ray, ray_workers,
                                   gpus_per_worker=ray_gpus))
            return made[-1]
    try:
        store = score_stage(dataset, split, candidates, spec, root=root, top_k=top_k,
                            add_positives=positives, shard=parse_shard(shard), chunk_size=chunk_size,
                            embedding_cache=embedding_cache, teacher_factory=factory)
    finally:
        for t in made:  # a teacher from a given factory is the caller's to close
            t.close()
    sess = store.manifest.get("sessions", [])[-1:]
    rate = sess[0].get("pairs_per_s") if sess else None
    console.print(f"store {store.id}: {store.manifest['n_rows']:,} rows"
                  + (f", {rate:,.1f} pairs/s" if rate else " (already complete)"))
    typer.echo(str(store.path))


@app.command("show")
def show(store: Path, rows: int = typer.Option(5, help="Rows to print.")) -> None:
    """Summarise a store: teacher, inputs, status, throughput, score statistics."""
    import json

    import numpy as np

    from retrieval_kd.scores.store import ScoreStore

    s = ScoreStore(store)
    m = s.manifest
    t = s.table()
    sc = np.asarray(t.column("score").to_pylist(), dtype=float)
    shard = f", shard {m['shard']['index']}/{m['shard']['count']}" if m.get("shard") else ""
    console.print(f"[bold]{s.id}[/] {m['status']} ({t.num_rows:,}/{m['n_rows']:,} rows{shard})")
    console.print(f"inputs: {m['inputs']['dataset']}/{m['inputs']['split']}, "
                  f"{m['inputs']['n_queries']:,} queries, {m['inputs']['n_passages']:,} passages")
    console.print("teacher: " + json.dumps(m["teacher"]), highlight=False, soft_wrap=True)
    if m.get("teacher_loaded"):
        console.print("teacher as loaded: " + json.dumps(m["teacher_loaded"]), highlight=False, soft_wrap=True)
    for sess in m.get("sessions", []):
        console.print(f"session: {sess['pairs_scored']:,} pairs in {sess['seconds']}s "
                      f"({sess['pairs_per_s']} pairs/s)")
    if t.num_rows:
        console.print(f"scores: min {sc.min():.4f}  mean {sc.mean():.4f}  max {sc.max():.4f}")
        typer.echo(t.slice(0, rows).to_pandas().to_string(index=False))


@app.command("verify")
def verify(store: Path, dataset: str = typer.Option(None, "--dataset", "-d",
                                                    help="Default: the dataset the store names."),
           split: str = typer.Option(None, "--split", "-s")) -> None:
    """Check every row's query and passage text against the dataset; exit 1 on any mismatch."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.store import ScoreStore
    from retrieval_kd.scores.verify import verify_store

    s = ScoreStore(store)
    inputs = s.manifest["inputs"]
    ds = load_dataset(dataset or inputs["dataset"], split or inputs["split"])
    rep = verify_store(s, ds)
    for line in rep.lines():
        console.print(f"[red]mismatch:[/] {line}")
    if not rep.ok:
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {rep.rows:,} rows match {ds.name}/{ds.split}")


@app.command("merge")
def merge(shards: list[Path], root: Path = typer.Option(None, help="Default: the shards' folder.")) -> None:
    """Join complete shards of one request into one store (refuses mixed requests)."""
    from retrieval_kd.scores.merge import merge_shards

    s = merge_shards(shards, root)
    console.print(f"merged {len(shards)} shards: {s.manifest['n_rows']:,} rows")
    typer.echo(str(s.path))


@app.command("export")
def export(store: Path, fmt: str = typer.Argument(..., metavar="FORMAT"), out: Path = typer.Argument(...),
           dataset: str = typer.Option(None, "--dataset", "-d",
                                       help="Needed by text formats (flagembedding-jsonl)."),
           tag: str = typer.Option("rkd")) -> None:
    """Write a store's scores in another tool's format."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.interop import export_scores
    from retrieval_kd.scores.store import ScoreStore

    s = ScoreStore(store)
    s.require_complete("exporting it")
    ds = load_dataset(dataset, s.manifest["inputs"]["split"]) if dataset else None
    n = export_scores(s.table(), fmt, out, dataset=ds, tag=tag)
    console.print(f"wrote {n:,} records to {out}")


@app.command("import")
def import_(fmt: str = typer.Argument(..., metavar="FORMAT"), source: Path = typer.Argument(...),
            dataset: str = typer.Option(..., "--dataset", "-d"),
            split: str = typer.Option("train", "--split", "-s"),
            root: Path = typer.Option(Path("scores"), "--root"),
            name: str = typer.Option(None, help="Teacher name to record.")) -> None:
    """Import another tool's scores as a store (ids must exist in the dataset)."""
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.imported import import_into_store
    from retrieval_kd.scores.interop import import_scores

    if not source.is_file():
        raise DataError(source, "file not found")
    ds = load_dataset(dataset, split)
    table = import_scores(fmt, source, dataset=ds)
    s = import_into_store(table, fmt, source, ds, root, name)
    console.print(f"imported {s.manifest['n_rows']:,} rows as store {s.id}")
    typer.echo(str(s.path))
