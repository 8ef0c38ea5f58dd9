"""The encoders an index is built from (one per indexable family), behind one small interface.

Each encoder turns a list of document texts into one chunk's named arrays
(``encode_docs``), encodes queries for search (``encode_queries``), and describes itself
for manifests (``identity``; it is part of the chunk fingerprint, so a changed model or
setting never reuses stale chunks).

* :class:`DenseEncoder`: a SentenceTransformer, one normalised vector per text.
* :class:`SpladeEncoder`: a SparseEncoder (SPLADE), one vocabulary-sized sparse vector.
* :class:`TokenEncoder`: per-token vectors for late interaction (ColBERT). A saved
  sentence-transformers ``MultiVectorEncoder`` (or a Stanford/PyLate ColBERT checkpoint it
  reads) is used as is; any other Hugging Face or SentenceTransformer folder is wrapped as a
  MultiVectorEncoder over its transformer's token outputs, with the folder's own ``Dense``
  layers (if any) applied per token as the projection, then L2-normalised. No randomly
  initialised projection is ever added, so the same folder always gives the same vectors.
  Any object with ``encode_query`` / ``encode_document`` returning per-text token matrices
  can also be passed programmatically.

Each family's params take ``backend`` / ``variant`` (torch fp32 by default; ``onnx`` fp32, O1-O3
or int8, see :mod:`retrieval_kd.models.backends`): the model's transformer then runs on ONNX
Runtime over a cached export, documents and queries alike (a search re-creates the encoder from
the params the index recorded), and the backend enters the identity, so chunks and indexes of
different backends never mix.

The dense and SPLADE encoders take an ``embedding_cache`` folder (:mod:`retrieval_kd.embcache`):
documents it holds for the same model and settings are not encoded again (``cache.cached``
counts them). It is no part of the identity. ColBERT token matrices are not cached.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval_kd.errors import RkdError
from retrieval_kd.families import BI_ENCODER, COLBERT, SPLADE, get
from retrieval_kd.families.lengths import MAX_LENGTH, QUERY_MAX_LENGTH, OneName, renamed
from retrieval_kd.models.backends import BackendParams, apply_backend, backend_info, check
from retrieval_kd.models.load import load_st_model
from retrieval_kd.models.resolve import ModelRef, resolve_model
from retrieval_kd.retrieve.dense import DenseParams, dense_doc_cache, encode_texts, load_encoder


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _device(device: str | None, backend: str = "torch") -> str:
    from retrieval_kd.teachers.torch_utils import pick_device

    return pick_device(device) if backend == "torch" else (device or "cpu")  # onnx runs on the CPU


class _ModelEncoder:
    """The start of the dense and SPLADE encoders: a model by reference, its params (the defaults of
    ``params_class`` when none), then :meth:`_load` of the model and its embedding cache."""

    family: ClassVar[str]
    """Its family's index name (in the identity)."""
    params_class: ClassVar[type[BaseModel]]

    def __init__(self, model: str | ModelRef, params: BaseModel | None = None,
                 embedding_cache: str | Path | None = None) -> None:
        _quiet_hf()
        self.ref = model if isinstance(model, ModelRef) else resolve_model(model)
        self.params = params or self.params_class()
        try:
            self._load(embedding_cache)
        except OSError as e:
            from retrieval_kd.models.load import not_loadable

            raise not_loadable(self.ref, f"a {self.family} encoder", e) from None

    def _load(self, embedding_cache: str | Path | None) -> None:
        raise NotImplementedError


# -- dense --------------------------------------------------------------------------------------
class DenseEncoder(_ModelEncoder):
    family, params_class = BI_ENCODER.index_name, DenseParams
    params: DenseParams

    def _load(self, embedding_cache: str | Path | None) -> None:
        self.doc_ref = resolve_model(self.params.doc_model) if self.params.doc_model else self.ref
        if self.doc_ref is self.ref:
            self.st = self.doc_st = load_encoder(self.ref, self.params)  # on params.backend
        else:  # asymmetric: the query encoder on torch, the documents' model on params' backend
            self.st = load_encoder(self.ref, self.params.model_copy(update={"backend": "torch", "variant": "fp32",
                                                                           "max_length": None}))
            try:
                self.doc_st = load_encoder(self.doc_ref, self.params)
            except OSError as e:
                from retrieval_kd.models.load import not_loadable

                raise not_loadable(self.doc_ref, "the doc_model", e) from None
            dims = (self.st.get_embedding_dimension(), self.doc_st.get_embedding_dimension())
            if dims[0] != dims[1]:
                raise RkdError(f"{self.ref.ref} makes {dims[0]}-d query vectors, doc_model {self.doc_ref.ref} "
                               f"{dims[1]}-d document vectors: they must agree")
        self.backend = backend_info(self.doc_st)
        self.dim = int(self.doc_st.get_embedding_dimension())
        self.cache = dense_doc_cache(embedding_cache, self.doc_ref, self.doc_st, self.params)

    def identity(self) -> dict[str, Any]:
        doc = {"doc_model": self.doc_ref.provenance()} if self.doc_ref is not self.ref else {}
        return {"family": self.family, "model": self.ref.provenance(), **doc,
                "max_seq_length": self.doc_st.max_seq_length,
                "params": self.params.model_dump(exclude={"device", "batch_size", "backend", "variant"}),
                **self.backend}  # torch fp32 adds nothing

    def encode_docs(self, texts: list[str]) -> dict[str, np.ndarray]:
        def enc(t: list[str]) -> np.ndarray:
            return encode_texts(self.doc_st, t, self.params, self.params.doc_prompt, chunk=len(t) or 1)
        if self.cache is None:
            return {"emb": enc(texts)}
        emb = self.cache.encode(texts, enc, self.params.doc_prompt)
        self.cache.flush()  # one shard per chunk: a killed build keeps what it encoded
        return {"emb": emb}

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.st, texts, self.params, self.params.query_prompt)


# -- SPLADE -------------------------------------------------------------------------------------
class SpladeParams(OneName, BackendParams):
    model_config = ConfigDict(extra="forbid")
    # 8: SPLADE's vocabulary-sized logits (batch x tokens x 30,522) dominate memory; at 256 tokens a batch
    # of 32 peaked at 3.6 GB (OpenVINO bf16) / 2.6 GB (torch), 8 at 1.4 / 1.1 GB, and was no slower.
    batch_size: int = Field(8, gt=0)
    """Texts per encoder batch."""
    max_length: int | None = renamed(MAX_LENGTH, "max_seq_length")
    """Tokens per text (None: the model's). Old name ``max_seq_length``, which dumps keep."""
    device: str | None = None
    """Torch device of the encoder (default: the best available)."""


class SpladeEncoder(_ModelEncoder):
    family, params_class = SPLADE.index_name, SpladeParams
    params: SpladeParams

    def _load(self, embedding_cache: str | Path | None) -> None:
        from sentence_transformers import SparseEncoder

        from retrieval_kd.models.splade_pooling import fast_max_pooling

        self.se = load_st_model(SparseEncoder, self.ref, "a SPLADE index",
                                device=_device(self.params.device, self.params.backend),
                                max_seq_length=self.params.max_length)
        fast_max_pooling(self.se)
        self.backend = apply_backend(self.se, self.ref, self.params.backend, self.params.variant,
                                     device=self.params.device, what="the SPLADE encoder")
        # the output width, from a probe: SpladePooling learns it on its first forward pass
        self.vocab = int(self.se.encode_query(["probe"], convert_to_sparse_tensor=True).shape[1])
        self.cache = SPLADE.doc_cache(embedding_cache, self.ref, self.se.max_seq_length, self.backend)

    def identity(self) -> dict[str, Any]:
        return {"family": self.family, "model": self.ref.provenance(),
                "max_seq_length": self.se.max_seq_length, "vocab": self.vocab, **self.backend}

    def _csr(self, t):
        from retrieval_kd.index.sparse import torch_sparse_to_csr

        return torch_sparse_to_csr(t, self.vocab)

    def encode_docs(self, texts: list[str]) -> dict[str, np.ndarray]:
        def enc(t: list[str]):
            return self._csr(self.se.encode_document(t, batch_size=self.params.batch_size,
                                                     convert_to_sparse_tensor=True, save_to_cpu=True))
        m = enc(texts) if self.cache is None else self.cache.encode(texts, enc)
        if self.cache is not None:
            self.cache.flush()
        return {"indptr": m.indptr.astype(np.int64), "indices": m.indices.astype(np.int32),
                "data": m.data.astype(np.float32)}

    def encode_queries(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        m = self._csr(self.se.encode_query(texts, batch_size=self.params.batch_size,
                                           convert_to_sparse_tensor=True, save_to_cpu=True))
        return [(m.indices[m.indptr[i]:m.indptr[i + 1]].astype(np.int64),
                 m.data[m.indptr[i]:m.indptr[i + 1]].astype(np.float64)) for i in range(m.shape[0])]


# -- late interaction ---------------------------------------------------------------------------
class ColbertParams(OneName, BackendParams):
    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(32, gt=0)
    """Texts per encoder batch."""
    query_max_length: int | None = renamed(QUERY_MAX_LENGTH, "query_length", gt=0)
    """Query token limit (default: the model's). Old name ``query_length``, which dumps keep."""
    max_length: int | None = renamed(MAX_LENGTH, "document_length", gt=0)
    """Document token limit (default: the model's). Old name ``document_length``, which dumps keep."""
    normalize: bool = True
    """L2-normalise each token vector."""
    device: str | None = None
    """Torch device of the encoder (default: the best available)."""


def _st_model_type(folder: Path) -> str | None:
    cfg = folder / "config_sentence_transformers.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("model_type")
    return None


def is_multi_vector_folder(folder: Path) -> bool:
    """A saved MultiVectorEncoder / PyLate ColBERT, or a Stanford ColBERT checkpoint."""
    if _st_model_type(folder) in ("MultiVectorEncoder", "ColBERT"):
        return True
    cfg = folder / "config.json"
    return cfg.is_file() and "HF_ColBERT" in (json.loads(cfg.read_text()).get("architectures") or [])


def wrap_transformer_folder(location: str, device: str):
    """A MultiVectorEncoder over a plain HF / SentenceTransformer folder's token outputs.

    Kept from a SentenceTransformer pipeline: its Transformer and any Dense layers (re-pointed at
    the token embeddings); dropped: pooling and sentence-level normalisation.
    """
    from sentence_transformers import MultiVectorEncoder, SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    folder = Path(location)
    if (folder / "modules.json").is_file():
        st = SentenceTransformer(location, device="cpu")
        mods = []
        for m in st:
            if isinstance(m, Transformer):
                mods.append(m)
            elif isinstance(m, Dense):
                m.module_input_name = m.module_output_name = "token_embeddings"
                mods.append(m)
        if not mods or not isinstance(mods[0], Transformer):
            raise ValueError(f"{location}: no Transformer module to take token embeddings from")
    else:
        mods = [Transformer(location)]
    mods += [MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
    return MultiVectorEncoder(modules=mods, device=device)


class TokenEncoder:
    """Per-token embeddings (float32, one ``(n_tokens, dim)`` matrix per text)."""

    family, params_class = COLBERT.index_name, ColbertParams

    def __init__(self, model: str | ModelRef | Any, params: ColbertParams | None = None) -> None:
        _quiet_hf()
        self.params = params or ColbertParams()
        if isinstance(model, (str, ModelRef)):
            self.ref = model if isinstance(model, ModelRef) else resolve_model(model)
            folder = Path(self.ref.location)
            if folder.is_dir() and not is_multi_vector_folder(folder):
                self.source = "transformer-tokens"
                self.model = wrap_transformer_folder(self.ref.location,
                                                     _device(self.params.device, self.params.backend))
            else:
                from sentence_transformers import MultiVectorEncoder

                self.source = "multi-vector-encoder"
                self.model = MultiVectorEncoder(self.ref.location,
                                                device=_device(self.params.device, self.params.backend))
        else:  # an already-built model object (a trained student, a test double)
            self.ref, self.source, self.model = None, type(model).__name__, model
        if self.ref is not None:  # the MultiVectorEncoder's Transformer on params.backend
            self.backend = apply_backend(self.model, self.ref, self.params.backend, self.params.variant,
                                         device=self.params.device, what="the ColBERT encoder")
        else:
            check(self.params.backend, self.params.variant, what="the ColBERT encoder")
            if self.params._auto:  # no export without weights on disk: the default is torch here
                self.params = self.params.model_copy(update={"backend": "torch", "variant": "fp32"})
            if self.params.backend != "torch":
                raise RkdError(f"the ColBERT encoder: backend {self.params.backend} needs a model on disk "
                               "(the export is keyed by its weights), not a model object")
            self.backend = {}
        self._set_lengths()
        probe = self.encode_queries(["probe"])[0]
        self.dim = int(probe.shape[1])

    def _set_lengths(self) -> None:
        for m in getattr(self.model, "_modules", {}).values():
            if self.params.query_max_length and hasattr(m, "query_length"):
                m.query_length = self.params.query_max_length
            if self.params.max_length and hasattr(m, "document_length"):
                m.document_length = self.params.max_length

    def lengths(self) -> dict[str, int | None]:
        for m in getattr(self.model, "_modules", {}).values():
            if hasattr(m, "query_length"):
                return {"query_length": m.query_length, "document_length": m.document_length,
                        "max_seq_length": getattr(m, "max_seq_length", None)}
        return {}

    def identity(self) -> dict[str, Any]:
        return {"family": self.family, "source": self.source,
                "model": self.ref.provenance() if self.ref else {"object": self.source},
                "normalize": self.params.normalize, **self.lengths(),
                "modules": [type(m).__name__ for m in getattr(self.model, "_modules", {}).values()],
                **self.backend}

    def _encode(self, texts: list[str], query: bool) -> list[np.ndarray]:
        """Each text's scoring-mask tokens, L2-normalised when ``params.normalize``.

        A MultiVectorEncoder is asked for its raw padded outputs (``output_value=None``) and the
        mask is applied in NumPy: the library's own slicing (``token_embedding[mask]`` per text)
        is a boolean-mask index that costs ~10 ms per text in this torch build, most of a small
        model's encode time. The vectors are the ones the library would return.
        """
        from sentence_transformers import MultiVectorEncoder

        fn = self.model.encode_query if query else self.model.encode_document
        if not isinstance(self.model, MultiVectorEncoder):  # a test double keeps the plain call
            out = fn(texts, batch_size=self.params.batch_size, convert_to_numpy=True,
                     normalize_embeddings=self.params.normalize, show_progress_bar=False)
            return [np.asarray(x, dtype=np.float32) for x in out]
        mats = []
        for item in fn(texts, batch_size=self.params.batch_size, output_value=None, show_progress_bar=False):
            x = item["token_embeddings"].float().cpu().numpy()[item["attention_mask"].cpu().numpy().astype(bool)]
            if self.params.normalize:  # as torch.nn.functional.normalize(p=2, eps=1e-12)
                x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            mats.append(np.ascontiguousarray(x, dtype=np.float32))
        return mats

    def encode_docs(self, texts: list[str]) -> dict[str, np.ndarray]:
        mats = self._encode(texts, query=False)
        lens = np.array([len(m) for m in mats], dtype=np.int64)
        tokens = np.concatenate(mats).astype(np.float16) if mats else np.zeros((0, self.dim), np.float16)
        return {"tokens": tokens, "lens": lens}

    def encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts, query=True)


def make_encoder(family: str, model: str | ModelRef | Any, params: BaseModel | None = None,
                 embedding_cache: str | Path | None = None):
    """The index encoder of ``family`` (or its index name); ``embedding_cache`` is used by dense and
    SPLADE ones (not ColBERT)."""
    return get(family).index_encoder(model, params, embedding_cache)
