"""Bi-encoder (SentenceTransformer) and SPLADE (SparseEncoder) models as scorers.

Each query is encoded once per call and each passage once; a pair's score is the model's
own similarity (cosine for normalised bi-encoders, dot product for SPLADE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kd.models.resolve import resolve_model
from retrieval_kd.teachers.base import Pair, Teacher
from retrieval_kd.teachers.torch_utils import pick_device, set_threads


def _unique(texts: list[str]) -> tuple[list[str], np.ndarray]:
    index: dict[str, int] = {}
    pos = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    return list(index), pos


class BiEncoderTeacher(Teacher):
    """Cosine similarity (or dot product with ``normalize=False``) of ST embeddings."""

    def __init__(self, model: str, batch_size: int = 64, max_length: int | None = None,
                 normalize: bool = True, query_prompt: str = "", doc_prompt: str = "",
                 threads: int | None = None, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        set_threads(threads)
        self.ref = resolve_model(model)
        self.st = SentenceTransformer(self.ref.location, device=pick_device(device))
        if max_length:
            self.st.max_seq_length = max_length
        self.batch_size, self.normalize = batch_size, normalize
        self.query_prompt, self.doc_prompt = query_prompt, doc_prompt

    def identity(self) -> dict[str, Any]:
        return {"kind": "bi-encoder", "model": self.ref.provenance(),
                "max_length": self.st.max_seq_length, "normalize": self.normalize,
                "query_prompt": self.query_prompt, "doc_prompt": self.doc_prompt}

    def _enc(self, texts: list[str], prompt: str) -> np.ndarray:
        return self.st.encode([prompt + t for t in texts], batch_size=self.batch_size,
                              normalize_embeddings=self.normalize, convert_to_numpy=True)

    def score(self, pairs: list[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        qs, qpos = _unique([p.query for p in pairs])
        ds, dpos = _unique([p.passage for p in pairs])
        q, d = self._enc(qs, self.query_prompt), self._enc(ds, self.doc_prompt)
        return np.einsum("ij,ij->i", q[qpos], d[dpos]).astype(np.float64)


class SpladeTeacher(Teacher):
    """Dot product of SPLADE sparse vectors (a SparseEncoder, or any masked-LM checkpoint)."""

    def __init__(self, model: str, batch_size: int = 32, max_length: int | None = None,
                 threads: int | None = None, device: str | None = None) -> None:
        from sentence_transformers import SparseEncoder

        set_threads(threads)
        self.ref = resolve_model(model)
        self.se = SparseEncoder(self.ref.location, device=pick_device(device))
        if max_length:
            self.se.max_seq_length = max_length
        self.batch_size = batch_size

    def identity(self) -> dict[str, Any]:
        return {"kind": "splade", "model": self.ref.provenance(), "max_length": self.se.max_seq_length}

    def score(self, pairs: list[Pair]) -> np.ndarray:
        import torch

        if not pairs:
            return np.zeros(0)
        qs, qpos = _unique([p.query for p in pairs])
        ds, dpos = _unique([p.passage for p in pairs])
        q = self.se.encode_query(qs, batch_size=self.batch_size, convert_to_tensor=True)
        d = self.se.encode_document(ds, batch_size=self.batch_size, convert_to_tensor=True)
        q, d = q.to_dense() if q.is_sparse else q, d.to_dense() if d.is_sparse else d
        qp, dp = torch.from_numpy(qpos), torch.from_numpy(dpos)
        return (q[qp] * d[dp]).sum(dim=1).double().cpu().numpy()
