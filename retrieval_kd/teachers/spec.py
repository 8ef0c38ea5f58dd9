"""Teacher specifications (YAML or flags) and the factory that builds teachers from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.models.backends import Backend, Variant
from retrieval_kd.retrieve.bm25 import BM25Params
from retrieval_kd.teachers.base import Teacher
from retrieval_kd.yamlloc import load_yaml


class _Spec(BaseModel):
    """A teacher spec. Fields named in ``LATER`` were added after stores and stages had been
    keyed by the spec's dump: at their default they are left out of every dump, so adding them
    changed no existing store id or stage key."""

    model_config = ConfigDict(extra="forbid")
    LATER: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler):
        out = handler(self)
        for k, default in self.LATER.items():
            if k in out and out[k] == default:
                del out[k]
        return out


class _BackendSpec(_Spec):
    """A neural teacher's inference backend (retrieval_kd/models/backends.py): ``torch`` (the
    weights as loaded, ``dtype`` applies), ``onnx`` (``variant`` fp32, O1-O3 or int8) or
    ``openvino``. Part of the identity when not ``torch`` / ``fp32`` (left out of dumps at the
    default, so older specs keep their store ids and stage keys)."""

    backend: Backend | Literal["auto"] = "auto"
    variant: Variant | Literal["auto"] = "auto"
    """``auto`` (the default): this machine's preferred backend (models/backends.py
    ``preferred``), resolved when the spec is built; torch where ``dtype`` asks for bf16/fp16."""

    @model_validator(mode="after")
    def _runnable(self):
        from retrieval_kd.models.backends import check, resolve_auto

        self.backend, self.variant = resolve_auto(self.backend, self.variant, dtype=getattr(self, "dtype", None),
                                                  device=getattr(self, "device", None))
        try:
            check(self.backend, self.variant, dtype=getattr(self, "dtype", None))
        except RkdError as e:
            raise ValueError(str(e)) from None
        return self


class CrossEncoderSpec(_BackendSpec):
    kind: Literal["cross-encoder"]
    model: str
    max_length: int = 512
    batch_size: int = 32
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bfloat16 autocast where the hardware has native bf16, else float32 (recorded resolved)."""
    threads: int | None = None
    device: str | None = None
    LATER: ClassVar[dict[str, Any]] = {"backend": "torch", "variant": "fp32"}


class BiEncoderSpec(_BackendSpec):
    kind: Literal["bi-encoder"]
    model: str
    batch_size: int = 64
    max_length: int | None = None
    normalize: bool = True
    query_prompt: str = ""
    doc_prompt: str = ""
    model_prompts: bool = False
    """Use the model's own ``query`` / ``document`` prompts (EmbeddingGemma's ``task: search
    result | query: `` and ``title: none | text: ``) where ``query_prompt`` / ``doc_prompt``
    are empty; the texts used enter the identity."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype (auto: bfloat16 where the hardware has native bf16); recorded as used."""
    LATER: ClassVar[dict[str, Any]] = {"model_prompts": False, "dtype": "float32", "backend": "torch",
                                       "variant": "fp32"}
    threads: int | None = None
    device: str | None = None


class SpladeSpec(_BackendSpec):
    kind: Literal["splade"]
    model: str
    batch_size: int = 32
    max_length: int | None = None
    threads: int | None = None
    device: str | None = None
    LATER: ClassVar[dict[str, Any]] = {"backend": "torch", "variant": "fp32"}


class BM25Spec(BM25Params):
    kind: Literal["bm25"]


class LLMSpec(_Spec):
    """A pointwise yes/no LLM judge: local (transformers, GGUF too) or an OpenAI-compatible server."""

    kind: Literal["llm"]
    model: str
    template: str | None = None
    backend: Literal["transformers", "openai"] = "transformers"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the server's key (the key itself is never stored)."""
    chat: bool | None = None
    """Wrap the prompt in the chat template (local: default when the tokenizer has one)."""
    yes: str = "Yes"
    no: str = "No"
    top_logprobs: int = 20
    max_length: int = 512
    batch_size: int = 8
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str | None = None
    threads: int | None = None


class MemberSpec(_Spec):
    teacher: TeacherSpec
    weight: float = Field(1.0, gt=0)
    """The member's share of the (normalised) sum; a negative weight would flip the teacher."""


class EnsembleSpec(_Spec):
    kind: Literal["ensemble"]
    members: list[MemberSpec]
    normalization: Literal["none", "minmax", "zscore", "rank"] = "zscore"


class CrossFitSpec(_Spec):
    """Cross-fitted: fold j's teacher scores the queries of fold j (``crc32(qid) % k``, k the
    number of folds); fold j's model was trained without them (see teachers/crossfit.py). A
    pipeline builds this for a member ``student:NAME`` whose student has ``crossfit: K``."""

    kind: Literal["crossfit"]
    folds: list[TeacherSpec] = Field(min_length=2)


TeacherSpec = Annotated[
    CrossEncoderSpec | BiEncoderSpec | SpladeSpec | BM25Spec | LLMSpec | EnsembleSpec | CrossFitSpec,
    Field(discriminator="kind"),
]
MemberSpec.model_rebuild()
CrossFitSpec.model_rebuild()


class _Holder(_Spec):
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
    if isinstance(spec, CrossEncoderSpec):
        from retrieval_kd.teachers.cross_encoder import CrossEncoderTeacher

        return CrossEncoderTeacher(**args)
    if isinstance(spec, BiEncoderSpec):
        from retrieval_kd.teachers.encoders import BiEncoderTeacher

        return BiEncoderTeacher(**args, embedding_cache=cache)
    if isinstance(spec, SpladeSpec):
        from retrieval_kd.teachers.encoders import SpladeTeacher

        return SpladeTeacher(**args, embedding_cache=cache)
    if isinstance(spec, BM25Spec):
        from retrieval_kd.teachers.bm25 import BM25Teacher

        return BM25Teacher(BM25Params(**args))
    if isinstance(spec, LLMSpec):
        return _build_llm(spec)
    if isinstance(spec, CrossFitSpec):
        from retrieval_kd.teachers.crossfit import CrossFitTeacher

        return CrossFitTeacher([build_teacher(f, cache) for f in spec.folds])
    from retrieval_kd.teachers.ensemble import EnsembleTeacher

    return EnsembleTeacher([(build_teacher(m.teacher, cache), m.weight) for m in spec.members],
                           spec.normalization)


def _build_llm(spec: LLMSpec) -> Teacher:
    extra = {"template": spec.template} if spec.template else {}
    if spec.backend == "openai":
        import os

        from retrieval_kd.teachers.openai_server import OpenAITeacher

        if not spec.base_url:
            raise DataError("<teacher spec>", "llm backend 'openai' needs base_url")
        return OpenAITeacher(base_url=spec.base_url, model=spec.model, api_key=os.environ.get(spec.api_key_env),
                             top_logprobs=spec.top_logprobs, chat=bool(spec.chat), yes=spec.yes,
                             no=spec.no, **extra)
    from retrieval_kd.teachers.llm import LLMTeacher

    return LLMTeacher(model=spec.model, max_length=spec.max_length, batch_size=spec.batch_size,
                      dtype=spec.dtype, device=spec.device, threads=spec.threads, chat=spec.chat,
                      yes=spec.yes, no=spec.no, **extra)
