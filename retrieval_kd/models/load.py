"""Load a resolved model reference as a sentence-transformers class (SentenceTransformer,
SparseEncoder, ...), refusing a saved folder of another class instead of wrapping it wrongly."""

from __future__ import annotations

from typing import Any

from retrieval_kd.models.resolve import ModelRef, require_model_type


def load_st_model(cls: type, ref: ModelRef, use: str, *, device: str | None = None,
                  max_seq_length: int | None = None) -> Any:
    """``cls(ref.location)`` for ``use`` (named in the error), with an optional length override."""
    require_model_type(ref, cls.__name__, use)
    model = cls(ref.location, device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model
