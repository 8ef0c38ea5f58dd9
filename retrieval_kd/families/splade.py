"""SPLADE: one vocabulary-sized sparse vector per text (``SparseEncoder``); an inverted index.

=================  =====================================================================
student            ``SparseEncoder``; a plain body becomes fill-mask Transformer +
                   ``SpladePooling("max")``
losses             inside ``SpladeLoss`` (FLOPS weights ``splade_query_weight`` /
                   ``splade_doc_weight``): ``margin-mse``: ``SparseMarginMSELoss``,
                   ``kl``: ``SparseDistillKLDivLoss``, ``infonce``:
                   ``SparseMultipleNegativesRankingLoss``
index              :class:`~retrieval_kd.index.encoders.SpladeEncoder` vectors in posting
                   lists (:mod:`retrieval_kd.index.sparse`), sparse dot-product search
embedding cache    ``sparse`` CSR rows
teacher            :class:`SpladeSpec` (kind ``splade``) builds a
                   :class:`~retrieval_kd.teachers.encoders.SpladeTeacher`
=================  =====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from retrieval_kd.families.base import ModelFamily, infonce_scale
from retrieval_kd.teachers.spec_base import ModelSpec


class SpladeSpec(ModelSpec):
    """A splade teacher's settings (YAML, flags)."""

    kind: Literal["splade"]
    # 8: SPLADE's vocabulary-sized logits (batch x tokens x 30,522) dominate memory; at 256 tokens a batch
    # of 32 peaked at 3.6 GB (OpenVINO bf16) / 2.6 GB (torch), 8 at 1.4 / 1.1 GB, and was no slower.
    batch_size: int = 8
    max_length: int | None = None


class SpladeFamily(ModelFamily):
    name = "splade"
    student_class = "SparseEncoder"
    index_name = "splade"
    encoder_class = "SpladeEncoder"
    cache_vectors, cache_kind = "splade", "sparse"
    teacher_spec = SpladeSpec

    def around_body(self, body: str, max_length: int, colbert_dim: int) -> Any:
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import SpladePooling

        from retrieval_kd.train.students import body_transformer

        tf = body_transformer(body, max_length, transformer_task="fill-mask")
        return SparseEncoder(modules=[tf, SpladePooling(pooling_strategy="max")])

    def loss(self, name: str, model: Any, cfg: Any) -> Any:
        from sentence_transformers.sparse_encoder import losses as L

        scale = infonce_scale(cfg)
        return {"margin-mse": lambda: L.SparseMarginMSELoss(model),
                "kl": lambda: L.SparseDistillKLDivLoss(model, temperature=cfg.temperature),
                "infonce": lambda: L.SparseMultipleNegativesRankingLoss(model, **scale)}[name]()

    def wrap_loss(self, loss: Any, model: Any, cfg: Any) -> Any:
        from sentence_transformers.sparse_encoder.losses import SpladeLoss

        return SpladeLoss(model, loss=loss, document_regularizer_weight=cfg.splade_doc_weight,
                          query_regularizer_weight=cfg.splade_query_weight)

    def index_bytes(self, faiss_params: Any, encoded: int) -> int:
        return encoded  # the posting lists take about what the encoded chunks do

    def write_index(self, tmp: Path, store: Any, n: int, enc: Any, faiss_params: Any, engine: str,
                    plaid_params: Any, params: dict[str, Any], stats: dict[str, Any]) -> None:
        import numpy as np

        from retrieval_kd.index.sparse import build_postings

        def chunks():
            for i in range(store.n_chunks):
                yield store.load(i, "indptr"), store.load(i, "indices"), store.load(i, "data")
        info = build_postings(chunks, n, enc.vocab, tmp)
        df = np.diff(np.load(tmp / "indptr.npy"))
        stats.update(info, avg_doc_terms=info["nnz"] / max(n, 1),
                     max_posting=int(df.max()) if len(df) else 0)

    def open_index(self, searcher: Any, ov: dict[str, Any]) -> None:
        from retrieval_kd.index.sparse import InvertedIndex

        searcher.inv = InvertedIndex(searcher.folder, len(searcher.doc_ids))

    def search(self, searcher: Any, q: Any, k: int) -> tuple[Any, Any, dict[str, float]]:
        docs, s, touched = searcher.inv.search(q[0], q[1], k)
        return docs, s, {"postings": touched, "query_terms": len(q[0])}

    def search_stats(self, searcher: Any, reps: list[Any]) -> dict[str, Any]:
        from retrieval_kd.index.sparse import flops

        return {"flops": flops(searcher.inv.df(), len(searcher.doc_ids), [r[0] for r in reps],
                               searcher.inv.vocab)}

    def build_teacher(self, args: dict[str, Any], embedding_cache: str | Path | None) -> Any:
        from retrieval_kd.teachers.encoders import SpladeTeacher

        return SpladeTeacher(**args, embedding_cache=embedding_cache)
