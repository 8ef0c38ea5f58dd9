"""The ``retrieve`` section: first stages (BM25, dense, ranx fusion of other entries), one
stage per split, each a TREC run (``retrieve:NAME@SPLIT``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from retrieval_kd.artifacts import read_manifest
from retrieval_kd.data.runfiles import RUN_FILE
from retrieval_kd.pipeline.adapters import rate, run_file_of, run_queries, stage_result
from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem
from retrieval_kd.pipeline.plan import Stage, abs_model, sid
from retrieval_kd.pipeline.registry import register
from retrieval_kd.pipeline.schema import Name, Split
from retrieval_kd.pipeline.sections import Section
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.retrieve.dense import DenseParams
from retrieval_kd.retrieve.fusion import FusionParams


class _RetrieveCommon(BaseModel):
    dataset: str
    splits: list[Split] = Field(min_length=1)
    k: int = Field(1000, gt=0)


class BM25Retrieve(BM25Params, _RetrieveCommon):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["bm25"]


DENSE = "dense"
"""The kind of a dense retrieve entry (exact search over a bi-encoder's vectors)."""


class DenseRetrieve(DenseParams, _RetrieveCommon):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["dense"]
    model: str


class FusionRetrieve(FusionParams, _RetrieveCommon):
    """ranx's fusion of other retrieve entries' runs, split by split (see retrieve/fusion.py)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fusion"]
    runs: list[Name] = Field(min_length=2)
    """Retrieve entries over the same dataset, each producing every split of this one."""
    k: int = Field(100, gt=0)


RetrieveEntry = Annotated[BM25Retrieve | DenseRetrieve | FusionRetrieve, Field(discriminator="kind")]


def check_run_ref(c: Checks, loc: tuple, name: str, dataset: str, splits: list[str]) -> None:
    """A reference to a retrieve entry's runs (``candidates``, a fusion's ``runs``) on ``dataset``."""
    p = c.p
    r = p.retrieve.get(name)
    if r is None:
        c.bad(loc, f"no retrieve entry '{name}' (retrieve: {', '.join(p.retrieve) or 'none'})")
        return
    if r.dataset != dataset and r.dataset in p.datasets and dataset in p.datasets:
        c.bad(loc, f"retrieve entry '{name}' is on dataset '{r.dataset}', not '{dataset}'")
    for s in splits:
        if s not in r.splits:
            c.bad(loc, f"retrieve entry '{name}' has no split '{s}' (splits: {', '.join(r.splits)})")


class Retrieve(Section):
    name, entry, stage, ref = "retrieve", RetrieveEntry, "retrieve", "retrieve"

    def check(self, c: Checks) -> list[Problem]:
        for name, r in c.p.retrieve.items():
            c.dataset(("retrieve", name), r.dataset, r.splits)
            if isinstance(r, DenseRetrieve):
                c.model(("retrieve", name, "model"), r.model)
            elif isinstance(r, FusionRetrieve):
                for i, ref in enumerate(r.runs):
                    if ref == name or ref in r.runs[:i]:
                        c.bad(("retrieve", name, "runs", i), f"'{ref}' " + ("is this fusion itself" if ref == name
                                                                              else "is listed twice"))
                    else:
                        check_run_ref(c, ("retrieve", name, "runs", i), ref, r.dataset, r.splits)
                if r.weights is not None and len(r.weights) != len(r.runs):
                    c.bad(("retrieve", name, "weights"), f"{len(r.weights)} weights for {len(r.runs)} runs")
            assert isinstance(r, (BM25Retrieve, DenseRetrieve, FusionRetrieve))
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        ds, out = lp.datasets, []
        for name, r in lp.pipeline.retrieve.items():
            params = r.model_dump(exclude={"kind", "dataset", "splits", "k", "model", "runs"})
            for split in r.splits:
                cfg = {"dataset": ds[r.dataset], "split": split, "k": r.k, "name": name, "params": params}
                if isinstance(r, FusionRetrieve):
                    out.append(Stage(sid("retrieve", name, split), "retrieve.fusion",
                                     {**cfg, "runs": list(r.runs)},
                                     {f"run:{n}": sid("retrieve", n, split) for n in r.runs},
                                     ds[r.dataset], ("retrieve", name)))
                elif isinstance(r, BM25Retrieve):
                    out.append(Stage(sid("retrieve", name, split), "retrieve.bm25", cfg,
                                     dataset=ds[r.dataset], loc=("retrieve", name)))
                else:
                    out.append(Stage(sid("retrieve", name, split), "retrieve.dense",
                                     {**cfg, "model": abs_model(r.model, lp.path.parent)},
                                     dataset=ds[r.dataset], loc=("retrieve", name)))
        return out


SECTION = Retrieve()


# ---------------------------------------------------------------- adapters


@register("retrieve.bm25", runtime_keys=("device",))
def retrieve_bm25(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from retrieval_kd.retrieve.stage import bm25_stage

    bm25_stage(config["dataset"], config["split"], out, BM25Params(**config["params"]),
               k=config["k"], name=config["name"])
    man = read_manifest(out) or {}
    t, nq = man.get("timings_s", {}), run_queries(man)
    search = t.get("search_s")  # index build + search: bm25s indexes in the same call
    return {"run": RUN_FILE, "queries": nq,
            "throughput": {"queries_per_s": rate(nq, search)},
            "latency_ms_per_query": round(1000 * search / nq, 3) if search and nq else None,
            "latency_note": "BM25 search time per query, index build included"}


@register("retrieve.dense", runtime_keys=("batch_size", "device"))
def retrieve_dense(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from retrieval_kd.embcache import current_root
    from retrieval_kd.models.backends import label
    from retrieval_kd.models.params import model_parameters
    from retrieval_kd.retrieve.stage import dense_stage

    dense_stage(config["dataset"], config["split"], out, config["model"], DenseParams(**config["params"]),
                k=config["k"], name=config["name"], embedding_cache=current_root())
    man = read_manifest(out) or {}
    t, nq = man.get("timings_s", {}), run_queries(man)
    per_query = (t.get("encode_queries_s") or 0) + (t.get("search_s") or 0)
    p = config["params"]
    return {"run": RUN_FILE, "queries": nq,
            "throughput": {"docs_per_s": t.get("docs_per_s"),
                           "queries_per_s": rate(nq, per_query)},
            "latency_ms_per_query": round(1000 * per_query / nq, 3) if nq else None,
            "latency_note": "query encoding + exact FAISS search, per query",
            "cached_docs": (man.get("stats") or {}).get("cached_docs"),
            "parameters": model_parameters(config["model"]),
            "backend": label(p.get("backend"), p.get("variant"))}


@register("retrieve.fusion")
def retrieve_fusion(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from retrieval_kd.retrieve.stage import fusion_stage

    ups = [inputs[f"run:{n}"] for n in config["runs"]]
    fusion_stage([run_file_of(d) for d in ups], out, FusionParams(**config["params"]), k=config["k"],
                 name=config["name"])
    man = read_manifest(out) or {}
    nq, fuse_s = run_queries(man), man.get("timings_s", {}).get("fuse_s")
    firsts = [stage_result(d).get("latency_ms_per_query") for d in ups]
    latency = (sum(firsts) + 1000 * fuse_s / nq) if nq and fuse_s is not None and None not in firsts else None
    return {"run": RUN_FILE, "queries": nq, "throughput": {"queries_per_s": rate(nq, fuse_s)},
            "latency_ms_per_query": round(latency, 3) if latency is not None else None,
            "latency_note": "the fused first stages one after the other, plus the fusion, per query"}
