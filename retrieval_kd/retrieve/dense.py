"""Exact dense retrieval: a sentence-transformers encoder and a FAISS flat inner-product index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import ConfigDict, Field

from retrieval_kd.data.types import Corpus, Queries, Run
from retrieval_kd.errors import RkdError
from retrieval_kd.families.lengths import MAX_LENGTH, OneName, renamed
from retrieval_kd.models.backends import BackendParams
from retrieval_kd.models.load import load_st_model
from retrieval_kd.models.resolve import ModelRef
from retrieval_kd.retrieve.topk import topk_run


class DenseParams(OneName, BackendParams):
    """Encoding settings; ``normalize`` turns inner product into cosine similarity; ``backend`` /
    ``variant`` the inference backend (retrieval_kd/models/backends.py; absent from dumps at torch
    fp32)."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(64, gt=0)
    """Texts per encoder batch."""
    max_length: int | None = renamed(MAX_LENGTH, "max_seq_length")
    """Tokens per text (default: the model's own maximum, as BEIR/MTEB keep it). Old name
    ``max_seq_length``, which dumps keep (retrieval_kd/families/lengths.py)."""
    normalize: bool = True
    """L2-normalise the vectors (inner product is then cosine similarity)."""
    query_prompt: str = ""
    """Text prepended to each query."""
    doc_prompt: str = ""
    """Text prepended to each document."""
    title_sep: str = " "
    """Joins a document's title and text."""
    device: str | None = None
    """Torch device of the encoder (default: the best available)."""
    doc_model: str | None = None
    """An index's documents encoded by this model instead of the index's own (an asymmetric
    index: e.g. a ``static:`` query encoder trained towards this model's query vectors,
    ``embed_on: queries``); the length, prompt and backend settings then apply to it, and the
    query encoder runs on torch. Left out of dumps when unset."""
    DROP_WHEN_NONE: ClassVar[tuple[str, ...]] = ("doc_model",)


def load_encoder(model: ModelRef, params: DenseParams):
    """Load a SentenceTransformer from a resolved reference, on ``params``' backend
    (:func:`retrieval_kd.models.backends.backend_info` tells which ran)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    from retrieval_kd.models.backends import apply_backend

    hf_logging.disable_progress_bar()  # our own progress covers loading
    device = params.device if params.backend == "torch" else (params.device or "cpu")  # onnx runs on CPU
    st = load_st_model(SentenceTransformer, model, "a dense encoder", device=device,
                       max_seq_length=params.max_length)
    apply_backend(st, model, params.backend, params.variant, device=params.device, what="the dense encoder")
    return st


def dense_doc_cache(root: str | Path | None, model: ModelRef, st, params: DenseParams):
    """The embedding cache of ``st``'s document vectors under ``root`` (None: no cache), shared
    with bi-encoder teachers of the same model and settings (:mod:`retrieval_kd.embcache`)."""
    from retrieval_kd.families import BI_ENCODER
    from retrieval_kd.models.backends import backend_info

    return BI_ENCODER.doc_cache(root, model, st.max_seq_length, backend_info(st), normalize=params.normalize,
                                doc_prompt=params.doc_prompt, dtype="float32")


def encode_texts(st, texts: list[str], params: DenseParams, prompt: str = "",
                 on_progress: Callable[[int], None] | None = None, chunk: int = 1024) -> np.ndarray:
    """Encode in chunks (so progress can be reported) into one float32 matrix."""
    parts = []
    for i in range(0, len(texts), chunk):
        batch = [prompt + t for t in texts[i:i + chunk]]
        parts.append(st.encode(batch, batch_size=params.batch_size, show_progress_bar=False,
                               convert_to_numpy=True, normalize_embeddings=params.normalize))
        if on_progress:
            on_progress(len(batch))
    if not parts:
        return np.zeros((0, st.get_sentence_embedding_dimension()), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def check_no_doc_model(params: DenseParams) -> None:
    """Dense retrieval encodes documents and queries with one model: ``doc_model`` is an index's."""
    if params.doc_model:
        raise RkdError("doc_model (documents by another model) applies to a dense index (rkd index dense), "
                       "not to dense retrieval")


def dense_search(st, corpus: Corpus, queries: Queries, params: DenseParams | None = None,
                 k: int = 1000) -> Run:
    """Encode corpus and queries, return the exact top-``k`` run."""
    params = params or DenseParams()
    check_no_doc_model(params)
    d = encode_texts(st, corpus.texts(params.title_sep), params, params.doc_prompt)
    q = encode_texts(st, list(queries.texts.values()), params, params.query_prompt)
    return topk_run(corpus.ids(), d, queries.ids(), q, k)
