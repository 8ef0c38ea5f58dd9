"""Bi-encoder (SentenceTransformer) and SPLADE (SparseEncoder) models as scorers.

Each distinct text is encoded once per teacher: embeddings are cached by text across
calls, so a passage that is a candidate of many queries (in many store chunks) costs one
forward pass. A pair's score is the model's own similarity (cosine for normalised
bi-encoders, dot product for SPLADE). Either runs on torch or, with ``backend="onnx"`` /
``"openvino"``, on a cached export of its transformer (retrieval_kd/models/backends.py).
With ``embedding_cache`` (a folder), passage vectors are also kept on disk and shared with other
teachers, stages and index builds of the same model and settings (:mod:`retrieval_kd.embcache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kd.families import BI_ENCODER, SPLADE
from retrieval_kd.models.load import load_st_model
from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.torch_utils import pick_device, resolve_dtype, set_threads, torch_dtype


class _EmbeddingCache:
    """Text -> row of an embedding matrix, filled on demand by ``encode(missing_texts)``."""

    def __init__(self, max_items: int = 1_000_000) -> None:
        self.rows: dict[str, int] = {}
        self.blocks: list[Any] = []
        self.max_items = max_items

    def lookup(self, texts: list[str], encode) -> tuple[Any, np.ndarray]:
        """Embeddings of the distinct texts needed, and each input text's row among them."""
        if len(self.rows) > self.max_items:  # bounded memory on very large candidate sets
            self.rows.clear()
            self.blocks.clear()
        missing = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if missing:
            base = len(self.rows)
            self.blocks = [self._stack(self.blocks + [encode(missing)])]
            self.rows.update((t, base + i) for i, t in enumerate(missing))
        pos = np.fromiter((self.rows[t] for t in texts), dtype=np.int64, count=len(texts))
        return self.blocks[0], pos

    @staticmethod
    def _stack(blocks: list[Any]) -> Any:
        if len(blocks) == 1:
            return blocks[0]
        if isinstance(blocks[0], np.ndarray):
            return np.concatenate(blocks)
        import scipy.sparse as sp

        return sp.vstack(blocks, format="csr")


class BiEncoderTeacher(Teacher):
    """Cosine similarity (or dot product with ``normalize=False``) of ST embeddings.

    With ``model_prompts``, an empty prompt is the model's own ``query`` / ``document`` prompt
    (EmbeddingGemma's); the texts used enter the identity.
    """

    def __init__(self, model: str, batch_size: int = 64, max_length: int | None = None,
                 normalize: bool = True, query_prompt: str = "", doc_prompt: str = "",
                 model_prompts: bool = False, dtype: str = "float32", threads: int | None = None,
                 device: str | None = None, backend: str = "torch", variant: str = "fp32",
                 embedding_cache: str | Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from retrieval_kd.models.backends import apply_backend, check

        check(backend, variant, dtype=dtype, what="the bi-encoder teacher")
        set_threads(threads)
        self.ref = resolve_model(model)
        dev = pick_device(device) if backend == "torch" else (device or "cpu")
        self.dtype = resolve_dtype(dtype, dev) if backend == "torch" else "float32"
        self.st = load_st_model(SentenceTransformer, self.ref, "a bi-encoder teacher", device=dev,
                                max_seq_length=max_length, model_kwargs={"dtype": torch_dtype(self.dtype)})
        self.backend = apply_backend(self.st, self.ref, backend, variant, threads=threads, device=dev,
                                     what="the bi-encoder teacher")
        self.batch_size, self.normalize = batch_size, normalize
        own = (getattr(self.st, "prompts", None) or {}) if model_prompts else {}
        self.query_prompt = query_prompt or own.get("query", "")
        self.doc_prompt = doc_prompt or own.get("document", "")
        self._q, self._d = _EmbeddingCache(), _EmbeddingCache()
        self._disk = BI_ENCODER.doc_cache(embedding_cache, self.ref, self.st.max_seq_length, self.backend,
                                          normalize=normalize, doc_prompt=self.doc_prompt, dtype=self.dtype)
        # query vectors too (``embed_on: queries`` asks for the same ones once per seed), in a folder
        # of their own: the identity says they are queries and with which prompt
        self._disk_q = BI_ENCODER.doc_cache(embedding_cache, self.ref, self.st.max_seq_length, self.backend,
                                            normalize=normalize, query_prompt=self.query_prompt, dtype=self.dtype,
                                            texts="queries")

    def identity(self) -> dict[str, Any]:
        ident = {"kind": BI_ENCODER.name, "model": self.ref.provenance(),
                 "max_length": self.st.max_seq_length, "normalize": self.normalize,
                 "query_prompt": self.query_prompt, "doc_prompt": self.doc_prompt}
        if self.dtype != "float32":  # float32 identities stay as they were before dtype existed
            ident["dtype"] = self.dtype
        return {**ident, **self.backend}  # torch fp32 adds nothing

    def _enc(self, texts: list[str], prompt: str) -> np.ndarray:
        x = self.st.encode([prompt + t for t in texts], batch_size=self.batch_size,
                           normalize_embeddings=self.normalize, convert_to_tensor=True)
        return x.float().cpu().numpy()  # bf16 tensors have no numpy view

    def _queries(self, texts: list[str]) -> np.ndarray:
        def enc(t: list[str]) -> np.ndarray:
            return self._enc(t, self.query_prompt)
        return self._disk_q.encode(texts, enc, self.query_prompt) if self._disk_q else enc(texts)

    def _docs(self, texts: list[str]) -> np.ndarray:
        def enc(t: list[str]) -> np.ndarray:
            return self._enc(t, self.doc_prompt)
        return self._disk.encode(texts, enc, self.doc_prompt) if self._disk else enc(texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Query vectors, one row per text (repeats encoded once; cached on disk if set up)."""
        q, pos = self._q.lookup(texts, self._queries)
        return q[pos]

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """Document vectors, one row per text (repeats encoded once; cached on disk if set up)."""
        d, pos = self._d.lookup(texts, self._docs)
        return d[pos]

    def close(self) -> None:
        for disk in (self._disk, self._disk_q):
            if disk:
                disk.close()

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        q, qpos = self._q.lookup([p.query for p in pairs], self._queries)
        d, dpos = self._d.lookup([p.passage for p in pairs], self._docs)
        return np.einsum("ij,ij->i", q[qpos], d[dpos]).astype(np.float64)


class SpladeTeacher(Teacher):
    """Dot product of SPLADE sparse vectors (a SparseEncoder, or any masked-LM checkpoint)."""

    def __init__(self, model: str, batch_size: int = 8, max_length: int | None = None,
                 threads: int | None = None, device: str | None = None, backend: str = "torch",
                 variant: str = "fp32", embedding_cache: str | Path | None = None) -> None:
        from sentence_transformers import SparseEncoder

        from retrieval_kd.models.backends import apply_backend, check
        from retrieval_kd.models.splade_pooling import fast_max_pooling

        check(backend, variant, what="the SPLADE teacher")
        set_threads(threads)
        self.ref = resolve_model(model)
        dev = pick_device(device) if backend == "torch" else (device or "cpu")
        self.se = load_st_model(SparseEncoder, self.ref, "a SPLADE teacher", device=dev,
                                max_seq_length=max_length)
        fast_max_pooling(self.se)
        self.backend = apply_backend(self.se, self.ref, backend, variant, threads=threads, device=dev,
                                     what="the SPLADE teacher")
        self.batch_size = batch_size
        self._q, self._d = _EmbeddingCache(), _EmbeddingCache()
        self._disk = SPLADE.doc_cache(embedding_cache, self.ref, self.se.max_seq_length, self.backend)

    def identity(self) -> dict[str, Any]:
        return {"kind": SPLADE.name, "model": self.ref.provenance(), "max_length": self.se.max_seq_length,
                **self.backend}

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        q, qpos = self._q.lookup([p.query for p in pairs], lambda t: self._enc(t, self.se.encode_query))
        d, dpos = self._d.lookup([p.passage for p in pairs], self._docs)
        return np.asarray(q[qpos].multiply(d[dpos]).sum(axis=1), dtype=np.float64).ravel()

    def _docs(self, texts: list[str]):
        def enc(t: list[str]):
            return self._enc(t, self.se.encode_document)
        return self._disk.encode(texts, enc) if self._disk else enc(texts)

    def close(self) -> None:
        if self._disk:
            self._disk.close()

    def _enc(self, texts: list[str], fn) -> scipy.sparse.csr_matrix:  # noqa: F821
        """Sparse vectors as a SciPy CSR matrix (never a dense vocab-sized row per passage)."""
        import scipy.sparse as sp

        x = fn(texts, batch_size=self.batch_size, convert_to_tensor=True, convert_to_sparse_tensor=True)
        x = x.coalesce().cpu() if x.is_sparse else x.to_sparse().coalesce().cpu()
        rows, cols = x.indices().numpy()
        return sp.csr_matrix((x.values().float().numpy(), (rows, cols)), shape=tuple(x.shape))
