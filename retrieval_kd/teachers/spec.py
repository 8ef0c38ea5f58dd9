"""Teacher specifications (YAML or flags) and the factory that builds teachers from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, ValidationError, model_validator

from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.families import teacher_family, teacher_specs
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.teachers.base import Teacher
from retrieval_kd.teachers.spec_base import Spec
from retrieval_kd.yamlloc import load_yaml


class BM25Spec(BM25Params):
    kind: Literal["bm25"]


def _local_backend(model: str) -> str:
    """``llama.cpp`` for a GGUF file when llama-cpp-python is importable, else ``transformers``."""
    from retrieval_kd.teachers.gguf import gguf_of, llama_cpp_available

    return "llama.cpp" if gguf_of(model) is not None and llama_cpp_available() else "transformers"


class LLMSpec(Spec):
    """A pointwise yes/no LLM judge: local (llama.cpp for GGUF files, transformers for HF
    checkpoints) or an OpenAI-compatible server."""

    kind: Literal["llm"]
    model: str
    template: str | None = None
    """The prompt (fields {query}, {passage}); default: the task's (teachers/prompts.py)."""
    task: str | None = None
    """qa | claim | argument | duplicate; default: the dataset's (its registry entry)."""
    backend: Literal["auto", "transformers", "llama.cpp", "openai"] = "auto"
    """``auto``: ``openai`` with a base_url, else llama.cpp for a GGUF model when llama-cpp-python
    is installed, else transformers (resolved when the spec is read; part of the identity)."""
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the server's key (the key itself is never stored)."""
    concurrency: int = Field(4, ge=1)
    """Requests in flight to the server (``openai`` backend; not part of the identity)."""
    chat: bool | None = None
    """Wrap the prompt in the chat template (local: default when the model has one)."""
    yes: str = "Yes"
    no: str = "No"
    top_logprobs: int = 20
    max_length: int = 512
    batch_size: int = 8
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """transformers only (llama.cpp runs the GGUF's quantised weights as they are)."""
    device: str | None = None
    threads: int | None = None
    LATER: ClassVar[dict[str, Any]] = {"task": None}

    @model_validator(mode="after")
    def _resolve_backend(self):
        if self.backend == "auto":
            self.backend = "openai" if self.base_url else _local_backend(self.model)
        return self


class ListwiseSpec(Spec):
    """A listwise (RankGPT sliding-window) LLM teacher: local GGUF (llama.cpp) or a server."""

    kind: Literal["llm-listwise"]
    model: str
    template: str | None = None
    """The prompt (fields {query}, {passages}, {n}); default: the task's (teachers/prompts.py)."""
    task: str | None = None
    backend: Literal["auto", "llama.cpp", "openai"] = "auto"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    chat: bool | None = None
    window: int = Field(20, ge=2)
    step: int = Field(10, ge=1)
    passes: int = Field(1, ge=1)
    orders: int = Field(1, ge=1)
    """Input orders per query (permutation self-consistency): the first-stage order, then
    ``orders - 1`` seeded shuffles; the final order is by mean rank over them."""
    passage_words: int = Field(100, ge=1)
    """Each passage is cut to its first words (RankGPT cuts by tokens; words need no tokenizer)."""
    rank_map: Literal["neg_log_rank", "linear"] = "neg_log_rank"
    max_new_tokens: int | None = None
    n_ctx: int = 4096
    concurrency: int = 4
    timeout: float = 300
    threads: int | None = None
    LATER: ClassVar[dict[str, Any]] = {"task": None, "orders": 1}

    @model_validator(mode="after")
    def _resolve_backend(self):
        if self.backend == "auto":
            self.backend = "openai" if self.base_url else "llama.cpp"
        return self


class MemberSpec(Spec):
    teacher: TeacherSpec
    weight: float = Field(1.0, gt=0)
    """The member's share of the (normalised) sum; a negative weight would flip the teacher."""


class EnsembleSpec(Spec):
    kind: Literal["ensemble"]
    members: list[MemberSpec]
    normalization: Literal["none", "minmax", "zscore", "rank"] = "zscore"


class CrossFitSpec(Spec):
    """Cross-fitted: fold j's teacher scores the queries of fold j (``crc32(qid) % k``, k the
    number of folds); fold j's model was trained without them (see teachers/crossfit.py). A
    pipeline builds this for a member ``student:NAME`` whose student has ``crossfit: K``."""

    kind: Literal["crossfit"]
    folds: list[TeacherSpec] = Field(min_length=2)


TeacherSpec = Annotated[
    Union[(*teacher_specs(), BM25Spec, LLMSpec, ListwiseSpec, EnsembleSpec, CrossFitSpec)],  # families' specs first
    Field(discriminator="kind"),
]
"""Any teacher spec: a family's model (each family module holds its spec) or bm25, llm, ensemble, crossfit."""
MemberSpec.model_rebuild()
CrossFitSpec.model_rebuild()


class _Holder(Spec):
    teacher: TeacherSpec


def parse_teacher(data: dict, source: str = "<teacher spec>") -> TeacherSpec:
    """Validate a teacher spec dict; errors name the source and the offending field."""
    try:
        return _Holder(teacher=data).teacher
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"][1:])
        raise DataError(source, f"teacher spec: {loc or 'kind'}: {err['msg']}") from None


def load_teacher_file(path: str | Path) -> TeacherSpec:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "teacher spec file not found")
    data, _ = load_yaml(path)  # syntax errors and duplicate keys name their line
    if not isinstance(data, dict):
        raise DataError(path, "a teacher spec must be a mapping with a 'kind'")
    return parse_teacher(data.get("teacher", data), str(path))


def build_teacher(spec: TeacherSpec, embedding_cache: str | Path | None = None) -> Teacher:
    """Instantiate the teacher a spec describes (models are resolved and loaded here); a model
    that cannot load (not on disk, no network for a hub id, wrong format) is one clear error.
    ``embedding_cache``: a folder where bi-encoder and SPLADE teachers (members too) keep passage
    vectors (:mod:`retrieval_kd.embcache`; it changes no identity); default: the pipeline stage's
    (:func:`~retrieval_kd.embcache.current_root`, none outside ``rkd run``)."""
    from retrieval_kd.embcache import current_root

    try:
        return _build(spec, embedding_cache if embedding_cache is not None else current_root())
    except (OSError, ValueError) as e:
        model = getattr(spec, "model", None)
        from retrieval_kd.redact import redact

        text = redact(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        hint = ""
        if model:
            from retrieval_kd.models.resolve import registered_copy

            copy = registered_copy(model, same_weights=False)
            if copy is not None:
                hint = f" (a registered copy, {copy.description}, is short name '{copy.name}')"
        raise RkdError(f"cannot load the {spec.kind} teacher" + (f" '{model}'" if model else "")
                       + f": {first}{hint}") from None


def _build(spec: TeacherSpec, cache: str | Path | None = None) -> Teacher:
    args = spec.model_dump(exclude={"kind"})
    family = teacher_family(spec.kind)
    if family is not None:  # a model of a family: cross-encoder, bi-encoder, SPLADE
        return family.build_teacher(args, cache)
    if isinstance(spec, BM25Spec):
        from retrieval_kd.teachers.bm25 import BM25Teacher

        return BM25Teacher(BM25Params(**args))
    if isinstance(spec, LLMSpec):
        return _build_llm(spec)
    if isinstance(spec, ListwiseSpec):
        return _build_listwise(spec)
    if isinstance(spec, CrossFitSpec):
        from retrieval_kd.teachers.crossfit import CrossFitTeacher

        return CrossFitTeacher([build_teacher(f, cache) for f in spec.folds])
    from retrieval_kd.teachers.ensemble import EnsembleTeacher

    return EnsembleTeacher([(build_teacher(m.teacher, cache), m.weight) for m in spec.members],
                           spec.normalization)


def _build_llm(spec: LLMSpec) -> Teacher:
    extra = {"template": spec.template, "task": spec.task}
    if spec.backend == "openai":
        import os

        from retrieval_kd.teachers.openai_server import OpenAITeacher

        if not spec.base_url:
            raise DataError("<teacher spec>", "llm backend 'openai' needs base_url")
        return OpenAITeacher(base_url=spec.base_url, model=spec.model, api_key=os.environ.get(spec.api_key_env),
                             top_logprobs=spec.top_logprobs, chat=bool(spec.chat), yes=spec.yes,
                             no=spec.no, concurrency=spec.concurrency, **extra)
    if spec.backend == "llama.cpp":
        from retrieval_kd.teachers.gguf import GGUFTeacher

        return GGUFTeacher(model=spec.model, max_length=spec.max_length, chat=spec.chat, threads=spec.threads,
                           yes=spec.yes, no=spec.no, **extra)
    from retrieval_kd.teachers.llm import LLMTeacher

    return LLMTeacher(model=spec.model, max_length=spec.max_length, batch_size=spec.batch_size,
                      dtype=spec.dtype, device=spec.device, threads=spec.threads, chat=spec.chat,
                      yes=spec.yes, no=spec.no, **extra)


def _build_listwise(spec: ListwiseSpec) -> Teacher:
    from retrieval_kd.teachers.listwise import ListwiseTeacher, LlamaGenerator, ServerGenerator

    if spec.backend == "openai":
        import os

        if not spec.base_url:
            raise DataError("<teacher spec>", "llm-listwise backend 'openai' needs base_url")
        gen = ServerGenerator(spec.base_url, spec.model, os.environ.get(spec.api_key_env), spec.timeout, spec.chat)
        model_id, concurrency = gen.model, spec.concurrency
    else:
        gen = LlamaGenerator(spec.model, spec.n_ctx, spec.threads, spec.chat)
        model_id, concurrency = gen.model, 1
    try:
        return ListwiseTeacher(gen, model_id, spec.backend, template=spec.template, task=spec.task,
                               window=spec.window, step=spec.step, passes=spec.passes,
                               orders=spec.orders, passage_words=spec.passage_words, rank_map=spec.rank_map,
                               max_new_tokens=spec.max_new_tokens, chat=gen.chat, concurrency=concurrency)
    except BaseException:
        gen.close()
        raise
