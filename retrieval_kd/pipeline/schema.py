"""Pipeline files: the schema (pydantic, unknown keys refused) and its sections.

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

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from retrieval_kd.eval.compare import ALPHA, STAT_TEST
from retrieval_kd.families import FAMILIES, Family
from retrieval_kd.queries.params import QueriesEntry, QueryFilter
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.retrieve.dense import DenseParams
from retrieval_kd.retrieve.fusion import FusionParams
from retrieval_kd.teachers.spec import TeacherSpec

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


class DatasetEntry(_Strict):
    source: str | None = None
    """A registered dataset name (``rkd data list``) or a dataset directory (relative to the
    pipeline file, else to the working directory)."""
    queries: Name | None = None
    """Instead of ``source``: the BEIR folder a ``queries`` entry generates (retrieval_kd/queries)."""
    filter: QueryFilter | None = None
    """With ``queries``: only the queries whose passage a teacher ranks within its top_k."""

    @model_validator(mode="after")
    def _one_origin(self) -> DatasetEntry:
        if (self.source is None) == (self.queries is None):
            raise ValueError("give exactly one of 'source' (a dataset) and 'queries' (a queries entry)")
        if self.filter is not None and self.queries is None:
            raise ValueError("'filter' filters generated queries: it goes with 'queries'")
        return self


class _RetrieveCommon(BaseModel):
    dataset: str
    splits: list[Split] = Field(min_length=1)
    k: int = Field(1000, gt=0)


class BM25Retrieve(BM25Params, _RetrieveCommon):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["bm25"]


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


class ScoreEntry(_Strict):
    """A score stage per split: ``teacher`` scores the top-``top_k`` of ``candidates``."""

    dataset: str
    splits: list[Split] = Field(min_length=1)
    candidates: str
    top_k: int = Field(100, gt=0)
    add_positives: bool = False
    chunk_size: int = Field(2000, gt=0)
    teacher: TeacherSpec


class StudentEntry(_Strict):
    """A train stage. ``params`` passes through to the train config unchanged."""

    family: Family
    init: str
    dataset: str
    split: Split = "train"
    teacher: str | None = None
    """A teachers entry (its scores on ``split``); none trains from labels only."""
    candidates: str | None = None
    """A retrieve entry whose run on ``split`` supplies negatives."""
    loss: str | list[str] | None = None
    params: dict[str, Any] = {}
    seeds: list[StrictInt] | None = Field(None, min_length=1)
    """Train once per seed (each its own stage, ``seed`` set in its train config)."""
    crossfit: StrictInt | None = Field(None, ge=2)
    """K: also train K fold models (``student:NAME%fJ``, each without fold J's queries); a
    teacher member ``student:NAME`` scoring this student's own split scores each query with the
    fold model that did not see it (out-of-fold), any other split with the full model."""

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        twice = sorted({s for s in seeds or [] if seeds.count(s) > 1})
        if twice:
            raise ValueError(f"seeds must be unique ({', '.join(map(str, twice))} listed twice)")
        return seeds


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


ROLES = ("init", "twin", "distilled", "teacher")
"""A family's roles (FamilyEntry's fields naming systems), in table order."""


class FamilyEntry(_Strict):
    """A student family's systems in an eval (display names from its ``systems``)."""

    regime: str = ""
    """What the comparison is about (labels, compression, teacher), shown in the report."""
    init: str | None = None
    twin: str
    """The label-only student trained like ``distilled`` but without the teacher."""
    distilled: str
    teacher: str | None = None

    def roles(self) -> dict[str, str]:
        """Role -> system display name, for the roles given."""
        return {r: n for r in ROLES if (n := getattr(self, r)) is not None}


class EvalEntry(_Strict):
    dataset: str
    split: Split = "test"
    systems: dict[str, str] = Field(min_length=1)
    """Display name -> reference (``retrieve:NAME``, ``teacher:NAME``, ``reranker:NAME``,
    ``index:NAME``)."""
    baseline: str | None = None
    """The system the others are tested against (a display name in ``systems``)."""
    metrics: list[str] = ["ndcg@10", "mrr@10", "recall@100"]
    ignore_identical_ids: bool = True
    stat_test: Literal["student", "fisher", "tukey"] = STAT_TEST
    alpha: float = Field(ALPHA, gt=0, lt=1)
    families: dict[str, FamilyEntry] = {}
    """Family label -> its systems: distilled vs twin, and the share of the init-to-teacher gap."""


class Pipeline(_Strict):
    name: Name
    description: str = ""
    root: str | None = None
    """Run root (default ``runs/<name>``), relative to the working directory."""
    datasets: dict[Name, DatasetEntry] = Field(min_length=1)
    queries: dict[Name, QueriesEntry] = {}
    """Generated training queries (retrieval_kd/queries/stage.py); a datasets entry
    ``{queries: NAME}`` names the result."""
    retrieve: dict[Name, RetrieveEntry] = {}
    teachers: dict[Name, ScoreEntry] = {}
    students: dict[Name, StudentEntry] = {}
    rerankers: dict[Name, ScoreEntry] = {}
    indexes: dict[Name, IndexEntry] = {}
    evals: dict[Name, EvalEntry] = {}


SECTIONS = ("datasets", "queries", "retrieve", "teachers", "students", "rerankers", "indexes", "evals")
REF_SECTIONS = {"retrieve": "retrieve", "teacher": "teachers", "reranker": "rerankers",
                "index": "indexes"}
"""Eval reference prefix -> pipeline section."""


def student_refs(spec: dict[str, Any]) -> list[str]:
    """The students (``student:NAME`` models) a teacher spec uses, ensemble members included."""
    if spec.get("kind") == "ensemble":
        return [n for m in spec.get("members", []) for n in student_refs(m["teacher"])]
    model = str(spec.get("model", ""))
    return [model[len(STUDENT_REF):]] if model.startswith(STUDENT_REF) else []


def entry_seeds(p: Pipeline, section: str, name: str) -> list[int] | None:
    """The seeds an entry's stages come in (None: one stage, unseeded). A student has its own;
    an index of a student and a reranker of seeded students have theirs (load checks that a
    reranker's seeded students share one list)."""
    if section == "students":
        return p.students[name].seeds
    if section == "indexes":
        ix = p.indexes[name]
        return p.students[ix.student].seeds if ix.student in p.students else None
    if section == "rerankers":
        seeded = [p.students[n].seeds for n in student_refs(p.rerankers[name].teacher.model_dump())
                  if n in p.students and p.students[n].seeds]
        return seeded[0] if seeded else None
    return None
