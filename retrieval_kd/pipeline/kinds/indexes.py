"""The ``indexes`` section: an index stage over a dataset's corpus (``index:NAME``, of a student
or a named model), then a search stage per split (``search:NAME@SPLIT``); an index of a
seeded student is one of each per seed (``index:NAME#s42``, ``search:NAME@test#s42``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from retrieval_kd.artifacts import read_json, read_manifest
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.errors import RkdError
from retrieval_kd.families import FAMILIES, Family
from retrieval_kd.families import get as get_family
from retrieval_kd.models.backends import keyed_params
from retrieval_kd.pipeline.adapters import STAGE_FILE, model_dir_of, run_queries, stage_result
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem, dotted
from retrieval_kd.pipeline.plan import Stage, abs_model, local_models, sid
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.schema import Split, _Strict
from retrieval_kd.pipeline.sections import Section


class SearchSpec(_Strict):
    splits: list[Split] = Field(["test"], min_length=1)
    k: int = Field(1000, gt=0)
    params: dict[str, Any] = {}


class IndexEntry(_Strict):
    """An index stage over ``dataset``'s corpus, then a search stage per split."""

    dataset: str
    student: str | None = None
    model: str | None = None
    family: Family | None = None
    """Needed with ``model``; a student's family is its own."""
    kind: str | None = None
    """Index type, passed to the index module (its default when absent)."""
    params: dict[str, Any] = {}
    search: SearchSpec = SearchSpec()

    @model_validator(mode="after")
    def _one_source(self) -> IndexEntry:
        if (self.student is None) == (self.model is None):
            raise ValueError("give exactly one of 'student' and 'model'")
        if self.model is not None and self.family is None:
            raise ValueError("an index of a 'model' needs its 'family' (" + ", ".join(FAMILIES) + ")")
        return self


class Indexes(Section):
    name, entry, stage, ref = "indexes", IndexEntry, "index", "index"

    def seeds(self, p: Any, name: str) -> list[int] | None:
        ix = p.indexes[name]
        return p.students[ix.student].seeds if ix.student in p.students else None

    def run_stage(self, name: str, split: str, seed: int | None) -> str:
        return sid("search", name, split, seed)

    def run_splits(self, entry: Any) -> list[str]:
        return entry.search.splits

    def check(self, c: Checks) -> list[Problem]:
        p = c.p
        for name, ix in p.indexes.items():
            loc = ("indexes", name)
            i_: IndexEntry = ix
            c.dataset(loc, i_.dataset, i_.search.splits)
            if i_.student is not None and i_.student not in p.students:
                c.bad((*loc, "student"), f"no student '{i_.student}' (students: {', '.join(p.students) or 'none'})")
            elif reranker := next((f for f in (i_.family, i_.student and p.students[i_.student].family)
                                   if f and not get_family(f).indexable), None):
                c.bad(loc, f"a {reranker} is not indexable: evaluate it as a reranker "
                           f"(rerankers: {{NAME: {{..., teacher: {{kind: {reranker}, model: 'student:NAME'}}}}}})")
            if i_.model is not None:
                c.model((*loc, "model"), i_.model)
            c.problems.extend(_index_problems(c.lp, name, i_))
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        p, ds, out = lp.pipeline, lp.datasets, []
        for name, ix in p.indexes.items():
            for seed in self.seeds(p, name) or [None]:
                inputs = {"student": sid("student", ix.student, seed=seed)} if ix.student else {}
                cfg = {"name": name, "dataset": ds[ix.dataset], "family": ix.family,
                       "model": abs_model(ix.model, lp.path.parent) if ix.model else None,
                       "kind": ix.kind, "params": local_models(keyed_params(_key_params(p, ix)), lp.path.parent)}
                out.append(Stage(sid("index", name, seed=seed), "index", cfg, inputs, ds[ix.dataset],
                                 ("indexes", name)))
                for split in ix.search.splits:
                    scfg = {"name": name, "dataset": ds[ix.dataset], "split": split, "k": ix.search.k,
                            "params": ix.search.params}
                    out.append(Stage(sid("search", name, split, seed), "search", scfg,
                                     {"index": sid("index", name, seed=seed)}, ds[ix.dataset],
                                     ("indexes", name, "search")))
        return out


SECTION = Indexes()


def _key_params(p, ix: IndexEntry) -> dict[str, Any]:
    """An index entry's params as its stage key sees them: a renamed encoder setting under the name
    the encoder params dump (``max_length`` as ``max_seq_length`` for dense, retrieval_kd/families/
    lengths.py), so a file written with either name keys alike (and as before the rename)."""
    from retrieval_kd.families.lengths import dumped_names

    student = p.students.get(ix.student) if ix.student else None
    family = student.family if student else ix.family
    fam = get_family(family) if family else None
    params = dumped_names(fam.encoder_params, ix.params) if fam is not None and fam.indexable else ix.params
    if fam is not None and fam.refine_default and ix.kind == "ivfpq" and "refine" not in params:
        params = {**params, "refine": fam.refine_default}  # refined since the default changed: a new key
    return params


def _index_problems(lp: LoadedPipeline, name: str, ix: IndexEntry) -> list[Problem]:
    """An index entry's params and search params checked against the index module (when installed)."""
    try:
        from retrieval_kd.index.search import SEARCH_OVERRIDES
    except ImportError:
        return []
    from pydantic import ValidationError as PydanticError

    loc = ("indexes", name)
    student = lp.pipeline.students.get(ix.student) if ix.student else None
    family = student.family if student else ix.family
    out = []
    if family is not None and get_family(family).indexable:
        try:
            _index_params(family, ix.kind, ix.params)
        except (RkdError, PydanticError) as e:
            where = (*loc, "params") if ix.params else loc
            out.append((lp.line(*where), f"{dotted(where)}: {e}".replace("\n", " ")))
    for k in ix.search.params:
        if k not in SEARCH_OVERRIDES:
            msg = f"indexes.{name}.search.params.{k}: unknown search setting (allowed: {', '.join(SEARCH_OVERRIDES)})"
            out.append((lp.line(*loc, "search", "params", k), msg))
    return out


# ---------------------------------------------------------------- the index and search adapters


def _index_params(family: str, kind: str | None, params: dict[str, Any]):
    """Split an index entry's params into (encoder params, FAISS params, build options) for an
    index of ``family`` (a family, or its index name)."""
    from retrieval_kd.families.lengths import accepted_names
    from retrieval_kd.index.faiss_index import FaissParams

    fam = get_family(family)
    enc_cls, name = fam.encoder_params, fam.index_name
    enc_names = accepted_names(enc_cls)  # the fields and their old names (max_seq_length: max_length)
    # colbert: engine (exact | plaid) and plaid: {nprobe, k_token, nfull, centroid_score_threshold}
    build_keys = {"chunk_size", "title_sep"} | fam.index_build_keys
    faiss_keys = set(FaissParams.model_fields) if fam.faiss_file else set()
    unknown = set(params) - enc_names - faiss_keys - build_keys
    if unknown:
        raise RkdError(f"index params {sorted(unknown)} unknown for a {name} index (encoder: "
                       f"{', '.join(enc_cls.model_fields)}; faiss: {', '.join(sorted(faiss_keys)) or '-'}; "
                       f"build: {', '.join(sorted(build_keys))})")
    enc = enc_cls(**{k: v for k, v in params.items() if k in enc_names})
    fp = None
    if fam.faiss_file:
        fkw = {k: v for k, v in params.items() if k in faiss_keys and k not in enc_names}
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


def _corpus_split(source: str) -> str:
    """A split to read the corpus through (every split has the same corpus): ``test``, or the
    dataset's first split when it has none (MS MARCO's dev-small, MIRACL's dev)."""
    from retrieval_kd.pipeline.load import dataset_splits

    have = dataset_splits(source)
    return have[0] if have and "test" not in have else "test"


@register("index", resumable=True, runtime_keys=("batch_size", "device", "chunk_size"),
          requires="retrieval_kd.index.build")
def index(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Encode the corpus with the student (or model) and build its index (build_index); the
    encoding chunks live in the stage's work folder, so a killed build resumes. Dense and SPLADE
    documents of a named model (not a run's student) come from, and go to, the run's embedding
    cache."""
    from retrieval_kd.embcache import current_root
    from retrieval_kd.index.build import build_index
    from retrieval_kd.models.backends import label_of_identity
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
    # would store a second copy nothing reads (unless another model, doc_model, encodes the documents)
    cache = None if "student" in inputs and not getattr(enc, "doc_model", None) else current_root()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "index" / "manifest.json").is_file():  # else built before a kill, not yet renamed
        build_index(ifam, config["dataset"], out / "index", model, encoder_params=enc, faiss_params=fp,
                    split=_corpus_split(config["dataset"]), name=config["name"], embedding_cache=cache, **build)
    man = read_manifest(out / "index") or {}
    stats = man.get("stats", {})
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
    return {"run": RUN_FILE, "queries": run_queries(man),
            "throughput": {"queries_per_s": stats.get("qps_with_encoding")},
            "latency_ms_per_query": round(per_query, 3) if lat else None,
            "latency_p50_ms": lat.get("p50_ms"), "latency_p95_ms": lat.get("p95_ms"),
            "latency_note": "query encoding + index search, per query",
            "parameters": stage_result(inputs["index"]).get("parameters"),
            "backend": stage_result(inputs["index"]).get("backend")}
