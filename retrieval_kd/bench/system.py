"""The system a benchmark runs: a model (exact dense, or an index), BM25, or a reranker over a
first stage, and the pipeline entries that run it on one dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from retrieval_kd.errors import RkdError
from retrieval_kd.families import BI_ENCODER, CROSS_ENCODER, Family, get

FIRST_STAGES = ("bm25", "model")
INDEX_KINDS = ("flat", "hnsw", "ivfpq")


class BenchSystem(BaseModel):
    """What ``rkd bench`` evaluates on every dataset of a suite."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    """A registered model name, Hugging Face id or path (the first stage, or the system)."""
    family: Family | None = None
    """The model's family (a registered model's own; bi-encoder for other models); an indexable one."""
    index: Literal["flat", "hnsw", "ivfpq"] | None = None
    """None: exact dense retrieval (FAISS flat over all vectors) for a bi-encoder, an index of the
    family's default kind otherwise; else the index stage with that FAISS kind."""
    first_stage: Literal["bm25", "model"] | None = None
    """bm25, or the model; default: the model when one is given, else bm25."""
    reranker: str | None = None
    """A cross-encoder reranking the first stage's top ``depth``."""
    depth: int = Field(100, gt=0)
    k: int = Field(1000, gt=0)
    """Documents kept per query by the first stage."""

    @model_validator(mode="after")
    def _consistent(self) -> BenchSystem:
        if self.first_stage is None:
            self.first_stage = "model" if self.model else "bm25"
        if self.first_stage == "model" and not self.model:
            raise ValueError("--first-stage model needs --model")
        if self.first_stage == "bm25" and self.model and not self.reranker:
            raise ValueError("--model with --first-stage bm25 needs --reranker (or drop --first-stage)")
        if self.model and self.family is None:
            self.family = registered_family(self.model)
        if self.family is not None and not get(self.family).indexable:
            raise ValueError(f"a {self.family} is not a retrieval model: give it as --reranker")
        if self.reranker and self.first_stage == "model" and self.uses_index:
            raise ValueError("a reranker reranks a retrieve run: with --reranker the model's first stage is "
                             "exact dense retrieval (no --index), or use --first-stage bm25")
        return self

    @property
    def uses_index(self) -> bool:
        return self.first_stage == "model" and (self.index is not None or self.family != BI_ENCODER.name)

    @property
    def reference_key(self) -> str | None:
        """The registry's ``references`` system this one is comparable with (None: none is)."""
        if self.reranker:
            return None
        if self.first_stage == "bm25":
            return "bm25"
        return registered_name(self.model or "")

    def label(self) -> str:
        first = "BM25" if self.first_stage == "bm25" else (
            f"{self.model} ({self.family}, {self.index or ('exact' if not self.uses_index else 'index')})")
        return f"{first} >> {self.reranker} (top {self.depth})" if self.reranker else first

    def entries(self, alias: str, splits: list[str]) -> tuple[dict[str, dict], str]:
        """Pipeline entries (section -> {name: entry}) running this system on dataset ``alias``,
        and the prefix of the stage holding its runs (``retrieve``, ``search``, ``reranker``)."""
        from retrieval_kd.pipeline.kinds.retrieve import DENSE

        model = _absolute(self.model) if self.model else None
        out: dict[str, dict[str, Any]] = {}
        if self.uses_index:
            ix: dict[str, Any] = {"model": model, "family": self.family, "dataset": alias,
                                  "search": {"splits": splits, "k": self.k}}
            if self.index:
                ix["kind"] = self.index
            return {"indexes": {alias: ix}}, "search"
        first: dict[str, Any] = ({"kind": "bm25"} if self.first_stage == "bm25" else {"kind": DENSE, "model": model})
        out["retrieve"] = {alias: {**first, "dataset": alias, "splits": splits, "k": self.k}}
        if not self.reranker:
            return out, "retrieve"
        out["rerankers"] = {alias: {"dataset": alias, "splits": splits, "candidates": alias, "top_k": self.depth,
                                    "teacher": {"kind": CROSS_ENCODER.name, "model": _absolute(self.reranker)}}}
        return out, "reranker"


def _absolute(ref: str) -> str:
    """A model path made absolute (the generated pipeline file lives in the output folder)."""
    p = Path(ref).expanduser()
    return str(p.resolve()) if p.exists() else ref


def registered_name(ref: str) -> str | None:
    """The registry name of a model given by name or Hugging Face id (None: not registered)."""
    from retrieval_kd.models.registry import model_registry

    reg = model_registry()
    if ref in reg:
        return ref
    return next((n for n, m in reg.items() if m.hf_id == ref), None)


def registered_family(ref: str) -> str:
    """A registered model's family as a retrieval model; a model the registry does not hold is a
    bi-encoder."""
    from retrieval_kd.models.registry import RETRIEVAL_FAMILY, model_registry

    name = registered_name(ref)
    if name is None:
        return BI_ENCODER.name
    fam = model_registry()[name].family
    if fam not in RETRIEVAL_FAMILY:
        raise RkdError(f"model '{ref}' is a {fam}, not a retrieval model ({', '.join(RETRIEVAL_FAMILY.values())})")
    return RETRIEVAL_FAMILY[fam]
