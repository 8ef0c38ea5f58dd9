"""Load a resolved model reference as a sentence-transformers class (SentenceTransformer,
SparseEncoder, ...), refusing a saved folder of another class instead of wrapping it wrongly."""

from __future__ import annotations

from typing import Any

from retrieval_kd.errors import RkdError
from retrieval_kd.models.resolve import ModelRef, require_model_type


def load_st_model(cls: type, ref: ModelRef, use: str, *, device: str | None = None,
                  max_seq_length: int | None = None, model_kwargs: dict[str, Any] | None = None) -> Any:
    """``cls(ref.location)`` for ``use`` (named in the error), with an optional length override
    and ``model_kwargs`` for the transformer (e.g. its dtype)."""
    require_model_type(ref, cls.__name__, use)
    kw = {"model_kwargs": model_kwargs} if model_kwargs else {}
    model = cls(ref.location, device=device, **kw)
    if max_seq_length:
        set_max_length(model, max_seq_length)
    return model


def set_max_length(model: Any, n: int) -> None:
    """Cut texts at ``n`` tokens; a model that reads whole texts (a ``StaticEmbedding``, whose
    length is infinite and fixed) is left as it is."""
    if model.max_seq_length != float("inf"):
        model.max_seq_length = n


def not_loadable(ref: ModelRef, use: str, e: OSError) -> RkdError:
    """One line for a model that cannot be found (locally, and the hub unreachable or without it)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return RkdError(f"{ref.ref}: cannot load {use}: not a registered name, a local folder or a model in the "
                    f"Hugging Face cache ({first})")
