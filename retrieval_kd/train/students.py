"""Students: the four model families, initialised from a short name, a Hugging Face id or a path.

==================  ==========================================  ==============================================
family              class (a saved student loads with it)       built from a plain transformer body as
==================  ==========================================  ==============================================
``bi-encoder``      ``SentenceTransformer``                     Transformer + mean pooling (ST's default)
``splade``          ``SparseEncoder``                           fill-mask Transformer + ``SpladePooling("max")``
``colbert``         ``MultiVectorEncoder`` (ST 6 multi-vector)  Transformer + token Dense(``colbert_dim``) +
                                                                ``MultiVectorMask`` + token ``Normalize``
``cross-encoder``   ``CrossEncoder`` (``num_labels=1``)         sequence-classification head on the body
==================  ==========================================  ==============================================

A checkpoint already of the family's type (its ``config_sentence_transformers.json`` says so)
is loaded as it is. Any other folder (a plain Hugging Face model, or a Sentence Transformers
model of another type, e.g. the BERT-tiny body of ``splade-tiny`` for ColBERT) contributes its
transformer body, around which the family's model is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrieval_kd.errors import NotFoundError, RkdError
from retrieval_kd.models.resolve import ModelRef, resolve_model, saved_model_type

FAMILY_CLASS = {
    "bi-encoder": "SentenceTransformer",
    "splade": "SparseEncoder",
    "colbert": "MultiVectorEncoder",
    "cross-encoder": "CrossEncoder",
}


def model_class(family: str) -> type:
    """The Sentence Transformers class of a family (a trained student loads with it directly)."""
    import sentence_transformers as st

    try:
        return getattr(st, FAMILY_CLASS[family])
    except KeyError:
        raise RkdError(f"unknown student family '{family}' (known: {', '.join(FAMILY_CLASS)})") from None


def transformer_body(folder: str | Path) -> str:
    """The folder holding the Hugging Face transformer (``config.json``) of a model folder."""
    folder = Path(folder)
    modules = folder / "modules.json"
    if modules.is_file():
        for entry in json.loads(modules.read_text(encoding="utf-8")):
            if "Transformer" in entry.get("type", "") and (folder / entry.get("path", "") / "config.json").is_file():
                return str(folder / entry.get("path", ""))
    if (folder / "config.json").is_file():
        return str(folder)
    raise NotFoundError(f"{folder}: no transformer inside (no config.json)")


def _kwargs(location: str) -> dict[str, Any]:
    return {"local_files_only": True} if Path(location).exists() else {}


def build_student(family: str, init: str | ModelRef, *, max_length: int = 256, colbert_dim: int = 128,
                  seed: int | None = None) -> tuple[Any, ModelRef]:
    """A student of ``family`` initialised from ``init`` (a reference or an already resolved
    :class:`ModelRef`); returns the model and the resolved init."""
    import transformers

    model_class(family)  # validates the family
    ref = init if isinstance(init, ModelRef) else resolve_model(init)
    loc = ref.location
    local = Path(loc).exists()
    if seed is not None:
        transformers.set_seed(seed)  # new heads (ColBERT projection, CE classifier) start the same
    kind = saved_model_type(loc) if local else None
    try:
        model = _build(family, loc, kind, local, max_length, colbert_dim)
    except (OSError, ValueError) as e:
        raise RkdError(f"cannot build a {family} student from '{ref.ref}' ({loc}): {e}") from None
    return model, ref


def _build(family: str, loc: str, kind: str | None, local: bool, max_length: int, colbert_dim: int):
    from sentence_transformers import CrossEncoder, MultiVectorEncoder, SentenceTransformer, SparseEncoder

    kw = _kwargs(loc)
    if family == "bi-encoder":
        model = SentenceTransformer(loc, **kw)
        model.max_seq_length = max_length
        return model
    if family == "cross-encoder":
        if kind == "CrossEncoder":
            return CrossEncoder(loc, max_length=max_length, **kw)
        body = transformer_body(loc) if local else loc
        return CrossEncoder(body, num_labels=1, max_length=max_length, **_kwargs(body))
    if family == "splade":
        if kind == "SparseEncoder":
            model = SparseEncoder(loc, **kw)
        else:
            from sentence_transformers.base.modules import Transformer
            from sentence_transformers.sparse_encoder.modules import SpladePooling

            body = transformer_body(loc) if local else loc
            tf = Transformer(body, transformer_task="fill-mask", max_seq_length=max_length,
                             model_kwargs=_kwargs(body), processor_kwargs=_kwargs(body),
                             config_kwargs=_kwargs(body))
            model = SparseEncoder(modules=[tf, SpladePooling(pooling_strategy="max")])
        model.max_seq_length = max_length
        return model
    if family == "colbert":
        if kind == "MultiVectorEncoder":
            model = MultiVectorEncoder(loc, **kw)
        else:
            from sentence_transformers.base.modules import Dense, Normalize, Transformer
            from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
            from torch import nn

            body = transformer_body(loc) if local else loc
            tf = Transformer(body, max_seq_length=max_length, model_kwargs=_kwargs(body),
                             processor_kwargs=_kwargs(body), config_kwargs=_kwargs(body))
            proj = Dense(in_features=tf.get_embedding_dimension(), out_features=colbert_dim, bias=False,
                         activation_function=nn.Identity(), module_input_name="token_embeddings")
            model = MultiVectorEncoder(modules=[tf, proj, MultiVectorMask(),
                                                Normalize(module_input_name="token_embeddings")])
        model.max_seq_length = max_length
        return model
    raise RkdError(f"unknown student family '{family}'")


def load_student(family: str, path: str | Path):
    """Load a trained student with its plain Sentence Transformers class."""
    return model_class(family)(str(path), local_files_only=True)
