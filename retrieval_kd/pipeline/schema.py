"""Pipeline files: the schema (pydantic, unknown keys refused) and its sections.

Each section's entry model lives with the rest of that section (retrieval_kd/pipeline/kinds/,
retrieval_kd/pipeline/sections.py); :func:`pipeline_model` assembles the ``Pipeline`` model from
the registered sections. This module keeps the names they share.

A pipeline names its datasets once and refers to them, and to other entries, by name::

    name: scifact
    datasets:
      scifact: {source: scifact}                 # registered name or a directory
    retrieve:                                    # first stages, one run per split
      bm25: {kind: bm25, dataset: scifact, splits: [train, test], k: 1000}
      minilm: {kind: dense, model: minilm-l6, dataset: scifact, splits: [train, test]}
      pool: {kind: fusion, runs: [bm25, minilm], method: rrf, dataset: scifact,
             splits: [train, test], k: 100}        # ranx fusion of retrieve entries
    teachers:                                    # score stages: a teacher over a run's top-k
      ens:
        dataset: scifact
        splits: [train, test]
        candidates: pool                         # a retrieve entry (same split)
        top_k: 30
        teacher: {kind: ensemble, normalization: zscore, members: [...]}
    students:                                    # train stages
      minilm-kd: {family: bi-encoder, init: minilm-l6, dataset: scifact, teacher: ens,
                  loss: margin-mse, params: {epochs: 1}, seeds: [42, 43, 44]}
    rerankers: {...}                             # like teachers; a model may be student:NAME
    indexes:                                     # index a student (or a model), search splits
      minilm-kd: {student: minilm-kd, dataset: scifact, search: {splits: [test], k: 100}}
    evals:
      test:
        dataset: scifact
        split: test
        baseline: dense init
        systems: {BM25: retrieve:bm25, dense init: retrieve:minilm, distilled: index:minilm-kd}
        families:                                # students beside their init, twin and teacher
          dense: {init: dense init, twin: ..., distilled: distilled, teacher: ...}

System references in ``evals``: ``retrieve:NAME``, ``teacher:NAME``, ``reranker:NAME``,
``index:NAME`` (that index's search run) — each taken on the eval's split.

A student with ``seeds`` is one train stage per seed (``student:NAME#s42``); an index of it,
and a reranker whose model is ``student:NAME``, are one stage per seed too
(``index:NAME#s42``, ``search:NAME@test#s42``, ``reranker:NAME@test#s42``), and an eval system
referring to them stands for all the seeds (mean, sd and per-seed values).

A student with ``crossfit: K`` (not with ``seeds``) is also trained K times more, fold J's model
(``student:NAME%fJ``) without the queries of fold J (``crc32(qid) % K``). A teachers or
rerankers entry with a member ``student:NAME`` scores the student's own dataset and split
out-of-fold (each query by the fold model that did not see it); other splits by ``student:NAME``.

``queries`` entries generate training queries from a dataset's passages with an LLM (one per
sampled passage, qrels pointing at it); a datasets entry ``{queries: NAME}`` is that BEIR folder
(split ``train`` unless the entry says otherwise), usable by name like any dataset::

    queries:
      gq: {dataset: scifact, model: qwen2.5-coder-0.5b, count: 500, seed: 42, max_new_tokens: 32}
    datasets:
      scifact-gq: {queries: gq}
      scifact-gq-f: {queries: gq, filter: {teacher: ens, top_k: 3}}   # ens scores scifact-gq
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=80)]
"""Entry names become directory names: letters, digits and ``_ . + -``."""
Split = Name
"""Split names are part of stage ids and directory names too: the same plain names (never a path)."""

STUDENT_REF = "student:"
"""A model written ``student:NAME`` is that student's trained model."""

FOLD_MARK = "%f"
"""``NAME%fJ``: fold J's model of a cross-fitted student (stage ``student:NAME%fJ``)."""


def fold_name(name: str, j: int) -> str:
    return f"{name}{FOLD_MARK}{j}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineHead(_Strict):
    """A pipeline's own keys; :func:`pipeline_model` adds one field per registered section."""

    name: Name
    description: str = ""
    root: str | None = None
    """Run root (default ``runs/<name>``), relative to the working directory."""


_MODEL: dict[int, type[PipelineHead]] = {}


def pipeline_model() -> type[PipelineHead]:
    """The ``Pipeline`` model: the head's keys, then each registered section's entries
    (``dict[Name, entry]``), in registration order."""
    from retrieval_kd.pipeline.sections import sections, version

    v = version()
    if v not in _MODEL:
        fields: dict[str, Any] = {
            s.name: (dict[Name, s.entry], Field(min_length=1) if s.required else Field(default_factory=dict))
            for s in sections()}
        _MODEL.clear()
        _MODEL[v] = create_model("Pipeline", __base__=PipelineHead, **fields)
    return _MODEL[v]


_MOVED = {"DatasetEntry": "datasets", "BM25Retrieve": "retrieve", "DenseRetrieve": "retrieve",
          "FusionRetrieve": "retrieve", "RetrieveEntry": "retrieve", "ScoreEntry": "scores",
          "StudentEntry": "students", "SearchSpec": "indexes", "IndexEntry": "indexes",
          "ROLES": "evals", "FamilyEntry": "evals", "EvalEntry": "evals"}
"""Entry models now defined with their section (retrieval_kd/pipeline/kinds/), still importable here."""


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        return pipeline_model()
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"retrieval_kd.pipeline.kinds.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
