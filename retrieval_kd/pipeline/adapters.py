"""Built-in stage adapters: the pipeline's view of the retrieve, score, train, index and eval
stages. Each calls the stage function the matching ``rkd`` command calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import read_json, read_manifest, write_json
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.errors import RkdError
from retrieval_kd.pipeline.registry import register
from retrieval_kd.redact import redact_obj

STAGE_FILE = "stage.json"


def _rate(n: float, seconds: float | None) -> float | None:
    return round(n / seconds, 3) if seconds and seconds > 0 else None


def stage_result(d: Path) -> dict[str, Any]:
    """The result an upstream stage's adapter returned (from its ``stage.json``)."""
    p = d / STAGE_FILE
    return read_json(p).get("result", {}) if p.is_file() else {}


def run_file_of(d: Path) -> Path:
    """The TREC run a stage directory holds."""
    rel = stage_result(d).get("run", RUN_FILE)
    f = d / rel
    if not f.is_file():
        raise RkdError(f"{d}: holds no run file ({rel})")
    return f


def model_dir_of(d: Path) -> Path:
    """The trained model a student stage directory holds."""
    rel = stage_result(d).get("model")
    if not rel or not (d / rel).exists():
        raise RkdError(f"{d}: holds no trained model")
    return d / rel


# ---------------------------------------------------------------- retrieve


def _run_queries(man: dict[str, Any]) -> int:
    return int(man.get("outputs", {}).get(RUN_FILE, {}).get("queries") or 0)


@register("retrieve.bm25", runtime_keys=("device",))
def retrieve_bm25(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from retrieval_kd.retrieve.bm25 import BM25Params
    from retrieval_kd.retrieve.stage import bm25_stage

    bm25_stage(config["dataset"], config["split"], out, BM25Params(**config["params"]),
               k=config["k"], name=config["name"])
    man = read_manifest(out) or {}
    t, nq = man.get("timings_s", {}), _run_queries(man)
    search = t.get("search_s")  # index build + search: bm25s indexes in the same call
    return {"run": RUN_FILE, "queries": nq,
            "throughput": {"queries_per_s": _rate(nq, search)},
            "latency_ms_per_query": round(1000 * search / nq, 3) if search and nq else None,
            "latency_note": "BM25 search time per query, index build included"}


@register("retrieve.dense", runtime_keys=("batch_size", "device"))
def retrieve_dense(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from retrieval_kd.embcache import current_root
    from retrieval_kd.models.params import model_parameters
    from retrieval_kd.retrieve.dense import DenseParams
    from retrieval_kd.retrieve.stage import dense_stage

    dense_stage(config["dataset"], config["split"], out, config["model"], DenseParams(**config["params"]),
                k=config["k"], name=config["name"], embedding_cache=current_root())
    man = read_manifest(out) or {}
    t, nq = man.get("timings_s", {}), _run_queries(man)
    per_query = (t.get("encode_queries_s") or 0) + (t.get("search_s") or 0)
    from retrieval_kd.models.backends import label

    p = config["params"]
    return {"run": RUN_FILE, "queries": nq,
            "throughput": {"docs_per_s": t.get("docs_per_s"),
                           "queries_per_s": _rate(nq, per_query)},
            "latency_ms_per_query": round(1000 * per_query / nq, 3) if nq else None,
            "latency_note": "query encoding + exact FAISS search, per query",
            "cached_docs": (man.get("stats") or {}).get("cached_docs"),
            "parameters": model_parameters(config["model"]),
            "backend": label(p.get("backend"), p.get("variant"))}


@register("retrieve.fusion")
def retrieve_fusion(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from retrieval_kd.retrieve.fusion import FusionParams
    from retrieval_kd.retrieve.stage import fusion_stage

    ups = [inputs[f"run:{n}"] for n in config["runs"]]
    fusion_stage([run_file_of(d) for d in ups], out, FusionParams(**config["params"]), k=config["k"],
                 name=config["name"])
    man = read_manifest(out) or {}
    nq, fuse_s = _run_queries(man), man.get("timings_s", {}).get("fuse_s")
    firsts = [stage_result(d).get("latency_ms_per_query") for d in ups]
    latency = (sum(firsts) + 1000 * fuse_s / nq) if nq and fuse_s is not None and None not in firsts else None
    return {"run": RUN_FILE, "queries": nq, "throughput": {"queries_per_s": _rate(nq, fuse_s)},
            "latency_ms_per_query": round(latency, 3) if latency is not None else None,
            "latency_note": "the fused first stages one after the other, plus the fusion, per query"}


# ---------------------------------------------------------------- score


def _substitute_students(spec: dict[str, Any], inputs: dict[str, Path],
                         crossfit: dict[str, int] | None = None) -> dict[str, Any]:
    """``student:NAME`` models -> the trained model folders; a student in ``crossfit`` (name -> K)
    becomes a ``crossfit`` spec over its K fold models (inputs ``model:NAME%fJ``)."""
    from retrieval_kd.pipeline.schema import STUDENT_REF, fold_name

    if spec.get("kind") == "ensemble":
        return {**spec, "members": [{**m, "teacher": _substitute_students(m["teacher"], inputs, crossfit)}
                                    for m in spec["members"]]}
    model = str(spec.get("model", ""))
    if model.startswith(STUDENT_REF):
        name = model[len(STUDENT_REF):]
        k = (crossfit or {}).get(name)
        if k:
            folds = [model_dir_of(inputs[f"model:{fold_name(name, j)}"]) for j in range(k)]
            return {"kind": "crossfit", "folds": [{**spec, "model": str(d)} for d in folds]}
        return {**spec, "model": str(model_dir_of(inputs[f"model:{name}"]))}
    return spec


_LOADED_TEACHER: dict[str, Any] = {}
"""The last teacher a score stage built in this process, by spec: the next score stage with the
same spec (e.g. the train store, then the same teacher reranking test) reuses it, model loads
and text-keyed embedding caches included. Only the last one is kept (LLM teachers are large).
The cache owns it: score stores leave it open (``score_stage`` closes only teachers it built),
and it is closed here when another spec replaces it or :func:`release_teacher` drops it."""


def release_teacher() -> None:
    """Close and forget the kept teacher (the runner calls this before a stage of another kind)."""
    kept = list(_LOADED_TEACHER.values())
    _LOADED_TEACHER.clear()
    for t in kept:
        t.close()


def _teacher_factory(spec):
    from retrieval_kd.embcache import current_root
    from retrieval_kd.teachers.spec import build_teacher

    # the run's embedding cache too: a teacher kept from another run root must not write into it
    key = json.dumps([spec.model_dump(mode="json"), str(current_root())], sort_keys=True)

    def factory():
        if key not in _LOADED_TEACHER:
            release_teacher()
            _LOADED_TEACHER[key] = build_teacher(spec)
        return _LOADED_TEACHER[key]
    return factory


@register("score", resumable=True, runtime_keys=("batch_size", "threads", "device", "chunk_size",
                                                  "base_url", "concurrency", "timeout"))
def score(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Score the candidates into a store inside the stage; also write the scores as a run
    (the teacher as a reranker of its candidates)."""
    from retrieval_kd.artifacts import manifest, sha256_file
    from retrieval_kd.data.trec import write_trec_run
    from retrieval_kd.models.params import teacher_parameters
    from retrieval_kd.scores.stage import score_stage
    from retrieval_kd.teachers.spec import parse_teacher

    spec = parse_teacher(_substitute_students(config["teacher"], inputs, config.get("crossfit")),
                         f"stage {config['name']}")
    out.mkdir(parents=True, exist_ok=True)
    store = score_stage(config["dataset"], config["split"], run_file_of(inputs["candidates"]), spec,
                        root=out / "stores", top_k=config["top_k"], add_positives=config["add_positives"],
                        chunk_size=config["chunk_size"], teacher_factory=_teacher_factory(spec))
    run = store.scores()
    write_trec_run(run, out / RUN_FILE, tag=config["name"])
    sm = store.manifest
    sessions = sm.get("sessions", [])
    pairs, secs = sum(x["pairs_scored"] for x in sessions), sum(x["seconds"] for x in sessions)
    rate = _rate(pairs, secs)
    n_pairs, n_q = int(sm.get("n_rows") or 0), max(len(run), 1)
    first = stage_result(inputs["candidates"]).get("latency_ms_per_query")
    rerank_ms = 1000 * n_pairs / rate / n_q if rate else None
    write_json(out / "manifest.json", manifest(
        "score.rerank", inputs={"candidates": str(run_file_of(inputs["candidates"])),
                                "store": store.path.name},
        params={"name": config["name"], "top_k": config["top_k"],
                "teacher_spec": redact_obj(spec.model_dump())},
        outputs={RUN_FILE: {"sha256": sha256_file(out / RUN_FILE), "queries": len(run)}},
        store_id=sm.get("store_id"), teacher=sm.get("teacher"),
    ))
    from retrieval_kd.models.backends import label_of_identity

    return {"run": RUN_FILE, "store": str(store.path.relative_to(out)), "queries": len(run),
            "pairs": n_pairs, "throughput": {"pairs_per_s": rate},
            "backend": label_of_identity(sm.get("teacher")),
            "latency_ms_per_query": round(rerank_ms + (first or 0), 3) if rerank_ms is not None else None,
            "latency_note": "first stage + teacher scoring of the query's candidates",
            "parameters": teacher_parameters(spec.model_dump()),
            "run_note": f"reranks the first stage's top-{config['top_k']}: a metric at a deeper cutoff "
                        f"sees those {config['top_k']} only"}


# ---------------------------------------------------------------- eval


@register("eval")
def evaluate(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """evaluate_run + result_record per system (what ``rkd eval`` writes; a seeded system's
    mean over its seeds), significance against the baseline, and the families' comparison."""
    from retrieval_kd.pipeline.eval_stage import evaluate_stage

    return evaluate_stage(config, inputs, out)


# ---------------------------------------------------------------- index / search

def _index_params(family: str, kind: str | None, params: dict[str, Any]):
    """Split an index entry's params into (encoder params, FAISS params, build options) for an
    index of ``family`` (a family, or its index name)."""
    from retrieval_kd.families import get
    from retrieval_kd.index.faiss_index import FaissParams

    fam = get(family)
    enc_cls, name = fam.encoder_params, fam.index_name
    # colbert: engine (exact | plaid) and plaid: {nprobe, k_token, nfull, centroid_score_threshold}
    build_keys = {"chunk_size", "title_sep"} | fam.index_build_keys
    faiss_keys = set(FaissParams.model_fields) if fam.faiss_file else set()
    unknown = set(params) - set(enc_cls.model_fields) - faiss_keys - build_keys
    if unknown:
        raise RkdError(f"index params {sorted(unknown)} unknown for a {name} index (encoder: "
                       f"{', '.join(enc_cls.model_fields)}; faiss: {', '.join(sorted(faiss_keys)) or '-'}; "
                       f"build: {', '.join(sorted(build_keys))})")
    enc = enc_cls(**{k: v for k, v in params.items() if k in enc_cls.model_fields})
    fp = None
    if fam.faiss_file:
        fkw = {k: v for k, v in params.items() if k in faiss_keys and k not in enc_cls.model_fields}
        if kind:
            fkw["index"] = kind
        fp = FaissParams(**fkw) if fkw else None
    elif kind:
        raise RkdError(f"a {name} index is an inverted index: no 'kind' ({kind})")
    build = {k: v for k, v in params.items() if k in build_keys}
    if "plaid" in build:
        from retrieval_kd.index.plaid import PlaidParams

        build["plaid_params"] = PlaidParams(**(build.pop("plaid") or {}))
    return enc, fp, build


@register("index", resumable=True, runtime_keys=("batch_size", "device", "chunk_size"),
          requires="retrieval_kd.index.build")
def index(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Encode the corpus with the student (or model) and build its index (build_index); the
    encoding chunks live in the stage's work folder, so a killed build resumes. Dense and SPLADE
    documents of a named model (not a run's student) come from, and go to, the run's embedding
    cache."""
    from retrieval_kd.embcache import current_root
    from retrieval_kd.families import get as get_family
    from retrieval_kd.index.build import build_index
    from retrieval_kd.models.params import model_parameters

    if "student" in inputs:
        student = read_json(inputs["student"] / STAGE_FILE)["config"]
        family, model = student["family"], str(model_dir_of(inputs["student"]))
    else:
        family, model = config["family"], config["model"]
    ifam = get_family(family).index_name
    if ifam is None:
        raise RkdError(f"index {config['name']}: a {family} is not indexable; score it as a reranker")
    enc, fp, build = _index_params(ifam, config.get("kind"), config.get("params") or {})
    # a student trained in this run is encoded by its own index stage only: caching its vectors
    # would store a second copy nothing reads
    cache = None if "student" in inputs else current_root()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "index" / "manifest.json").is_file():  # else built before a kill, not yet renamed
        build_index(ifam, config["dataset"], out / "index", model, encoder_params=enc, faiss_params=fp,
                    name=config["name"], embedding_cache=cache, **build)
    man = read_manifest(out / "index") or {}
    stats = man.get("stats", {})
    from retrieval_kd.models.backends import label_of_identity

    return {"index": "index", "family": ifam,
            "parameters": model_parameters(model),
            "backend": label_of_identity((man.get("inputs") or {}).get("encoder")),
            "throughput": {"docs_per_s": stats.get("docs_per_s")},
            "cached_docs": (stats.get("encode") or {}).get("cached_docs"),
            "index_bytes": stats.get("index_bytes"), "peak_rss_mb": stats.get("peak_rss_mb")}


@register("search", requires="retrieval_kd.index.search")
def search(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Search the split's queries in the index (search_stage): run + latency figures."""
    from retrieval_kd.index.search import search_stage

    ix = inputs["index"] / stage_result(inputs["index"]).get("index", "index")
    search_stage(ix, config["dataset"], config["split"], out, k=config["k"],
                 overrides=config.get("params") or None, name=config["name"])
    man = read_manifest(out) or {}
    stats = man.get("stats", {})
    lat = stats.get("latency", {})
    per_query = (stats.get("query_encode_ms_mean") or 0) + (lat.get("mean_ms") or 0)
    return {"run": RUN_FILE, "queries": _run_queries(man),
            "throughput": {"queries_per_s": stats.get("qps_with_encoding")},
            "latency_ms_per_query": round(per_query, 3) if lat else None,
            "latency_p50_ms": lat.get("p50_ms"), "latency_p95_ms": lat.get("p95_ms"),
            "latency_note": "query encoding + index search, per query",
            "parameters": stage_result(inputs["index"]).get("parameters"),
            "backend": stage_result(inputs["index"]).get("backend")}


# ---------------------------------------------------------------- train

PIPELINE_TRAIN_KEYS = frozenset({"family", "init", "output", "scores", "dataset", "split", "teacher",
                                 "candidates", "losses", "query_folds"})
"""TrainConfig fields the pipeline sets itself (a student's ``params`` may not)."""
SAVE_STEPS = 25
"""Checkpoint interval when a student's params give none: a killed pipeline loses at most
this many steps of a training stage (the trainer resumes from the last checkpoint)."""


def train_config_data(config: dict[str, Any], inputs: dict[str, Path] | None, out: Path) -> dict[str, Any]:
    """A student entry as TrainConfig data. Without ``inputs`` (validation before a run),
    placeholders stand for the upstream stores and runs the entry names."""
    from retrieval_kd.pipeline.schema import STUDENT_REF

    init = config["init"]
    if init.startswith(STUDENT_REF):
        init = str(model_dir_of(inputs["init"])) if inputs else init
    data = {"save_steps": SAVE_STEPS, **(config.get("params") or {}), "family": config["family"], "init": init,
            "dataset": config["dataset"], "split": config["split"], "output": str(out / "model")}
    has_teacher = ("teacher" in inputs) if inputs is not None else bool(config.get("teacher"))
    if has_teacher:
        store = (inputs["teacher"] / stage_result(inputs["teacher"])["store"]) if inputs else out / "store"
        data.update(scores=[str(store)], teacher="store")
    else:
        data["teacher"] = "none"
        if "candidates" in (inputs if inputs is not None else config):
            data["candidates"] = str(run_file_of(inputs["candidates"])) if inputs else str(out / "run.trec")
    loss = config.get("loss")
    if loss is not None:
        data["losses"] = loss
    elif not has_teacher:
        data["losses"] = "infonce"  # the label-only objective
    return data


@register("train", resumable=True, runtime_keys=("save_total_limit", "logging_steps"),
          requires="retrieval_kd.train.stage", version=2)  # 2: bi-encoder losses use its similarity
def train(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Train the student (train_stage): from its teacher's score store, or label-only from a
    run's candidates. Checkpoints live in the stage's work folder, so a killed run resumes."""
    from pydantic import ValidationError

    from retrieval_kd.train.config import TrainConfig
    from retrieval_kd.train.stage import train_stage

    out.mkdir(parents=True, exist_ok=True)
    try:
        cfg = TrainConfig(**train_config_data(config, inputs, out))
    except ValidationError as e:
        raise RkdError(f"student {config['name']}: " + "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}" for err in e.errors())) from None
    from retrieval_kd.models.params import count_parameters

    model = train_stage(cfg)
    man = read_manifest(model) or {}
    outs = man.get("outputs", {})
    return {"model": "model", "family": config["family"], "parameters": count_parameters(model),
            "loss_log": "model/manifest.json",
            "steps": outs.get("global_step"), "train_loss": outs.get("train_loss"),
            "throughput": {"examples_per_s": outs.get("examples_per_s")}}
