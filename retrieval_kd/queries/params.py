"""The settings of query generation (CLI and pipeline alike), and the pipeline's ``queries`` entry."""

from __future__ import annotations

import string

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

DEFAULT_TEMPLATE = (
    "{passage}\n\n"
    "Write a question (at most 15 words) that is answered by the text above. Output only the question."
)
"""Asks for the search query a passage answers, phrased as a question: on SciFact passages,
SmolLM2-135M and Qwen2.5-Coder-0.5B gave on-topic questions with it, where "write a search
query that this passage answers" drew descriptions of the passage ("The passage provides ...")
or the instruction echoed back."""
TEMPLATE_FIELDS = frozenset({"title", "text", "passage"})
"""``{title}`` and ``{text}`` are the document's own fields; ``{passage}`` is title and text
joined. The text (or passage) is cut to ``max_passage_chars`` at a word boundary."""

RUNTIME_KEYS = ("chunk_size", "threads", "concurrency", "timeout", "base_url", "n_ctx")
"""Settings that never change what is generated (they stay out of the stage key and out of the
resume check)."""
CLEANING_KEYS = ("min_words", "max_words", "max_chars")
"""Settings that only change which generations are kept (a resumed run may change them)."""


def check_template(template: str) -> str:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"template is not a format string: {e}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"template fields must be among {{title}}, {{text}}, {{passage}} "
                         f"(got {', '.join('{' + f + '}' for f in sorted(unknown))})")
    if not fields & {"text", "passage"}:
        raise ValueError("the template must show the passage: put {passage} (or {text}) in it")
    return template


class QueryGenParams(BaseModel):
    """How queries are generated: which passages, which model, which prompt, how decoded."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    """A registered causal-lm name or a GGUF file (run by llama-cpp-python); with ``base_url``
    the server's model name (default: the one it serves)."""
    base_url: str | None = None
    """An OpenAI-compatible server (vLLM, llama.cpp server, ...) instead of a local model."""
    template: str = DEFAULT_TEMPLATE
    chat: bool | None = None
    """Send the prompt as a chat user turn (None: when the model has a chat template; a
    server: chat)."""
    count: StrictInt | None = Field(None, gt=0)
    """How many passages (one query each) ..."""
    share: float | None = Field(None, gt=0, le=1)
    """... or which share of the corpus; exactly one of the two. The passages are a seeded
    random sample, in corpus order."""
    seed: StrictInt = 42
    """Seeds the passage sample and, with ``temperature`` > 0, each passage's decoding
    (its own seed from (seed, docid), so chunking and resuming do not change it)."""
    temperature: float = Field(0.0, ge=0)
    """0: greedy."""
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: StrictInt = Field(40, ge=0)
    max_new_tokens: StrictInt = Field(32, gt=0)
    max_passage_chars: StrictInt = Field(1200, gt=0)
    min_words: StrictInt = Field(3, ge=1)
    max_words: StrictInt = Field(32, ge=1)
    max_chars: StrictInt = Field(256, ge=1)
    split: str = "train"
    """The split name of the generated qrels."""
    chunk_size: StrictInt = Field(16, gt=0)
    """Passages per chunk: a killed run loses at most one chunk's generations."""
    threads: StrictInt | None = Field(None, gt=0)
    concurrency: StrictInt = Field(4, gt=0)
    """Requests in flight to a server."""
    timeout: float = Field(120, gt=0)
    n_ctx: StrictInt = Field(2048, gt=0)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return check_template(v)

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError(f"'{v}' is not a split name")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> QueryGenParams:
        if (self.count is None) == (self.share is None):
            raise ValueError("give exactly one of 'count' (passages) and 'share' (of the corpus)")
        if self.model is None and self.base_url is None:
            raise ValueError("give 'model' (a registered causal-lm or a GGUF file) or 'base_url' (a server)")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} > max_words {self.max_words}")
        return self

    def generation(self) -> dict:
        """The settings that decide the raw generations (what a resumed run must share)."""
        return self.model_dump(exclude={*RUNTIME_KEYS, *CLEANING_KEYS, "split"})


class QueriesEntry(QueryGenParams):
    """A pipeline ``queries`` entry: generate queries for ``dataset``'s passages; a
    ``datasets`` entry ``{queries: NAME}`` is the resulting BEIR dataset (split ``split``)."""

    dataset: str


class QueryFilter(BaseModel):
    """A datasets entry's teacher filter: keep a generated query only if ``teacher`` (a teachers
    entry scoring the unfiltered generated dataset) ranks its passage within ``top_k``."""

    model_config = ConfigDict(extra="forbid")
    teacher: str
    top_k: StrictInt = Field(3, ge=1)
