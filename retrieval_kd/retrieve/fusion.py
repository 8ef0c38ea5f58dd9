"""A first stage made of others: ranx's fusion (``ranx.fuse``) of runs over the same split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from retrieval_kd.artifacts import MANIFEST, sha256_file
from retrieval_kd.data.types import Run
from retrieval_kd.errors import DataError, RkdError

METHODS: dict[str, dict[str, Any]] = {
    "rrf": {"k": 60}, "isr": {}, "log_isr": {}, "logn_isr": {"sigma": 0.01},
    "sum": {}, "max": {}, "min": {}, "med": {}, "anz": {}, "mnz": {}, "gmnz": {"gamma": None},
    "bordafuse": {}, "condorcet": {}, "rbc": {"phi": None},
    "wsum": {"weights": None}, "wmnz": {"weights": None}, "mixed": {"weights": None},
    "w_bordafuse": {"weights": None}, "w_condorcet": {"weights": None},
}
"""ranx's fusion methods that need no training on qrels -> their parameters and defaults
(None: required). ``weights`` is a field of its own (one per run)."""

Norm = Literal["min-max", "max", "sum", "zmuv", "rank", "borda"]
NORMS: tuple[str, ...] = Norm.__args__  # type: ignore[attr-defined]
DATASET_IDENTITY = ("split", "corpus_sha256", "queries_sha256")
"""What two runs' manifests must agree on to be fused (a dataset's name may differ by copy)."""


class FusionParams(BaseModel):
    """How runs are fused: ranx's method and normalisation, weights, the method's parameters."""

    model_config = ConfigDict(extra="forbid")
    method: str = "rrf"
    norm: Norm | None = "min-max"
    """Per-query score normalisation before fusing (ranx's; None: raw scores)."""
    weights: list[float] | None = None
    """One per run, in the runs' order (the weighted methods: wsum, wmnz, mixed, w_...)."""
    params: dict[str, float] = {}
    """The method's own parameters, passed to ranx (rrf: ``k``, its rank constant, 60)."""

    @model_validator(mode="after")
    def _check(self) -> FusionParams:
        if self.method not in METHODS:
            hint = self.method.lower().removeprefix("comb")
            hint = f"; ranx calls it '{hint}'" if hint in METHODS and hint != self.method else ""
            raise ValueError(f"fusion method '{self.method}' unknown (ranx's, untrained: "
                             f"{', '.join(METHODS)}{hint})")
        allowed = {n: d for n, d in METHODS[self.method].items() if n != "weights"}
        if unknown := sorted(set(self.params) - set(allowed)):
            raise ValueError(f"{self.method} takes no parameter {', '.join(unknown)} "
                             f"(its parameters: {', '.join(allowed) or 'none'})")
        if missing := [n for n, d in allowed.items() if d is None and n not in self.params]:
            raise ValueError(f"{self.method} needs params {', '.join(missing)}")
        if self.method == "rrf" and not float(self.params.get("k", 60)).is_integer():
            raise ValueError(f"rrf's k is a whole number (got {self.params['k']})")
        if ("weights" in METHODS[self.method]) != (self.weights is not None):
            raise ValueError(f"{self.method} needs weights (one per run)" if self.weights is None
                             else f"{self.method} takes no weights (weighted: "
                                  + ", ".join(m for m, p in METHODS.items() if "weights" in p) + ")")
        return self

    def ranx_params(self) -> dict[str, Any]:
        """The keyword arguments ranx's method receives (defaults filled in)."""
        out: dict[str, Any] = {**{n: d for n, d in METHODS[self.method].items() if d is not None},
                               **self.params}
        if self.method == "rrf":
            out["k"] = int(out["k"])  # a rank constant, added to integer ranks
        if self.weights is not None:
            out["weights"] = list(self.weights)
        return out


@dataclass
class FusionInput:
    """One run to fuse, with what identifies it."""

    run_file: Path
    run: Run
    manifest: dict[str, Any] | None

    def identity(self) -> dict[str, Any]:
        man = self.manifest or {}
        mfile = self.run_file.parent / MANIFEST
        return {"run_file": str(self.run_file), "run_sha256": sha256_file(self.run_file),
                "manifest_sha256": sha256_file(mfile) if self.manifest is not None else None,
                "kind": man.get("kind"), "name": man.get("params", {}).get("name")}

    def dataset(self) -> dict[str, Any] | None:
        return (self.manifest or {}).get("inputs", {}).get("dataset")


def load_input(path: str | Path) -> FusionInput:
    """A run directory (``run.trec`` + ``manifest.json``) or a bare TREC run file."""
    import json

    from retrieval_kd.data.runfiles import RUN_FILE, locate_run
    from retrieval_kd.data.trec import load_trec_run

    try:
        run_file, man = locate_run(path)
    except json.JSONDecodeError as e:
        raise DataError(Path(path) / MANIFEST if Path(path).is_dir() else Path(path).parent / MANIFEST,
                        f"malformed JSON ({e.msg})", e.lineno) from None
    if run_file.name != RUN_FILE:  # a bare file: a manifest beside it describes another file
        man = None
    run = load_trec_run(run_file)
    if not any(run.values()):
        raise DataError(run_file, "the run ranks no document: nothing to fuse")
    return FusionInput(run_file, run, man)


def check_same_split(inputs: list[FusionInput]) -> dict[str, Any] | None:
    """The dataset split the runs' manifests name (None when none does); runs over different
    datasets or splits are refused."""
    known = [(i.run_file, ds) for i in inputs if (ds := i.dataset())]
    for f, ds in known[1:]:
        f0, ds0 = known[0]
        if any(ds.get(x) != ds0.get(x) for x in DATASET_IDENTITY):
            same = " (same names, different content)" if ds["dataset"] == ds0["dataset"] \
                and ds["split"] == ds0["split"] else ""
            raise RkdError(f"cannot fuse runs of different datasets or splits: {f0} is "
                           f"{ds0.get('dataset')}/{ds0.get('split')}, {f} is "
                           f"{ds.get('dataset')}/{ds.get('split')}{same}")
    return known[0][1] if known else None


def check_arity(n_runs: int, params: FusionParams) -> None:
    """Two runs or more, and one weight per run."""
    if n_runs < 2:
        raise RkdError(f"fusion needs two runs or more (got {n_runs})")
    if params.weights is not None and len(params.weights) != n_runs:
        raise RkdError(f"{len(params.weights)} weights for {n_runs} runs")


def fuse_runs(runs: list[Run], params: FusionParams, k: int) -> Run:
    """``ranx.fuse`` of the runs, each query's top-``k`` kept. A query a run lacks counts
    as an empty ranking there; queries come in the runs' order."""
    import warnings

    from ranx import Run as RRun
    from ranx import fuse

    from retrieval_kd.data.trec import sorted_hits

    check_arity(len(runs), params)
    qids = list(dict.fromkeys(q for r in runs for q in r))
    with warnings.catch_warnings():  # numba's uint64->int64 cast note on ranx's kernels
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        fused = fuse([RRun({q: r.get(q, {}) for q in qids}) for r in runs], norm=params.norm,
                     method=params.method, params=params.ranx_params()).to_dict()
    return {q: dict(sorted_hits(fused.get(q, {}))[:k]) for q in qids}


def warm_up(runs: list[Run], params: FusionParams) -> None:
    """Fuse one query first: ranx compiles its numba kernels on first use (seconds), which
    would otherwise count as fusion time."""
    q = next(q for q in runs[0] if runs[0][q])
    fuse_runs([{q: r.get(q, {})} for r in runs], params, 1)
